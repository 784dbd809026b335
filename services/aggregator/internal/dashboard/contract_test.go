package dashboard

import (
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// jsonNames collects the JSON field names of t and of every type reachable from it.
func jsonNames(t reflect.Type, into map[string]bool, seen map[reflect.Type]bool) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice || t.Kind() == reflect.Map {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || seen[t] {
		return
	}
	seen[t] = true
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			into[name] = true
		}
		jsonNames(f.Type, into, seen)
	}
}

// TestDashboardReadsTheContract: every snake_case field the dashboard's script reads from the
// read API is a field of the contract (schemas/apiv1), so renaming a field there without
// changing the dashboard fails here. (The script's own identifiers are camelCase; one-word
// fields such as "psi" cannot be told apart from JavaScript's and are not checked.)
func TestDashboardReadsTheContract(t *testing.T) {
	names, seen := map[string]bool{}, map[reflect.Type]bool{}
	for _, v := range []any{apiv1.ExperimentsResponse{}, apiv1.StatsResponse{}, apiv1.SeriesResponse{}, apiv1.Distribution{}, apiv1.AlertsResponse{}, apiv1.HistoryResponse{}, apiv1.ExamplesResponse{}, apiv1.SegmentsResponse{}} {
		jsonNames(reflect.TypeOf(v), names, seen)
	}
	// Estimate writes its JSON itself.
	for _, n := range []string{"value", "low", "high", "alpha", "samples", "method"} {
		names[n] = true
	}
	src, err := os.ReadFile("static/app.js")
	if err != nil {
		t.Fatal(err)
	}
	read := regexp.MustCompile(`\.([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b`).FindAllStringSubmatch(string(src), -1)
	if len(read) == 0 {
		t.Fatal("found no snake_case field read in app.js; the check no longer sees the script's reads")
	}
	for _, m := range read {
		if !names[m[1]] {
			t.Errorf("app.js reads %q, which no read-API type in schemas/apiv1 has", m[1])
		}
	}
}
