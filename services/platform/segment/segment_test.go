package segment

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

func TestValidateListsEveryProblem(t *testing.T) {
	c := Config{Top: -1, Keys: []Key{
		{Name: "nofield"},
		{Name: "two", Header: "X-A", Pointer: "/a"},
		{Name: "order", Pointer: "/x", Buckets: []float64{1, 1}},
		{Name: "order", Pointer: "x"},
		{Name: "Bad Name", Header: "X-B"},
		{Name: "cred", Header: "Authorization"},
		{Name: "lonely", Header: "X-C", Buckets: []float64{1}},
		{Name: "ver", ModelVersion: "both"},
	}}
	err := c.Validate()
	if err == nil {
		t.Fatal("invalid segments accepted")
	}
	for _, want := range []string{
		"segments.top must be between 1 and 100", `"nofield"): names 0 fields`, `"two"): names 2 fields`, "bucket edges out of order: 1 after 1",
		`"order"): defined twice`, "must start with /", `"Bad Name"): name must be`, "carries credentials",
		"buckets need a pointer", "model_version must be champion or shadow",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	ok := Config{Keys: []Key{{Name: "f0", Pointer: "/inputs/0/data/0", Buckets: []float64{0, 1}}, {Name: "region", Header: "X-Region"}, {Name: "version", ModelVersion: VersionShadow}}}
	ok.Defaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid segments refused: %v", err)
	}
	many := Config{Top: MaxTop + 1}
	for i := range MaxKeys + 1 {
		many.Keys = append(many.Keys, Key{Name: string(rune('a' + i)), Header: "X"})
	}
	if err := many.Validate(); err == nil || !strings.Contains(err.Error(), "at most 8") || !strings.Contains(err.Error(), "got 101") {
		t.Fatalf("limits out of range: %v", err)
	}
}

func TestValuesReadEveryKindAndCountTheUnreadableAsUnknown(t *testing.T) {
	keys := []Key{
		{Name: "f0", Pointer: "/inputs/0/data/0", Buckets: []float64{0, 1}},
		{Name: "raw", Pointer: "/inputs/0/data/1"},
		{Name: "name", Pointer: "/inputs/0/name"},
		{Name: "esc", Pointer: "/a~1b"},
		{Name: "region", Header: "x-region"},
		{Name: "missing", Header: "X-None"},
		{Name: "champ", ModelVersion: VersionChampion},
		{Name: "shadowv", ModelVersion: VersionShadow},
		{Name: "obj", Pointer: "/inputs/0"},
	}
	req := schemas.HTTPRequest{
		Headers: map[string]string{"X-Region": "eu\x01west"},
		Body:    []byte(`{"inputs":[{"name":"x","data":[1.5,-2e3]}],"a/b":true}`),
	}
	got := Values(keys, req, "7")
	want := map[string]string{"f0": ">= 1", "raw": "-2e3", "name": "x", "esc": "true", "region": "eu?west", "missing": schemas.SegmentUnknown, "champ": "7", "obj": schemas.SegmentUnknown}
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d (the shadow version is the aggregator's): %v", len(got), len(want), got)
	}
	for _, v := range got {
		if want[v.Key] != v.Value {
			t.Errorf("%s = %q, want %q", v.Key, v.Value, want[v.Key])
		}
	}
	for _, body := range []string{`{"inputs":[{"data":["a"]}]}`, `not json`, `{"inputs":[]}`, `{"inputs":[{"data":[0.5`} {
		v := Values(keys[:1], schemas.HTTPRequest{Body: []byte(body)}, "")
		if len(v) != 1 || v[0].Value != schemas.SegmentUnknown {
			t.Errorf("body %s: %v, want unknown", body, v)
		}
	}
	mid := Values(keys[:1], schemas.HTTPRequest{Body: []byte(`{"inputs":[{"data":[0]}]}`)}, "")
	if mid[0].Value != "[0, 1)" {
		t.Errorf("edge 0 is in [0, 1), got %q", mid[0].Value)
	}
	trunc := Values(keys[:1], schemas.HTTPRequest{Body: []byte(`{"inputs":[{"data":[0]}]}`), Truncated: true}, "")
	if trunc[0].Value != schemas.SegmentUnknown {
		t.Errorf("a truncated body is not read: %q", trunc[0].Value)
	}
	long := Values([]Key{{Name: "h", Header: "X"}}, schemas.HTTPRequest{Headers: map[string]string{"X": strings.Repeat("é", 200)}}, "")
	if n := len(long[0].Value); n > schemas.MaxSegmentValue || n < schemas.MaxSegmentValue-1 {
		t.Errorf("long value cut to %d bytes", n)
	}
	c := schemas.Comparison{RequestID: "r", Experiment: "e", EventTime: timeNow(), Status: schemas.StatusComplete, Segments: append(got[:7], long...)}
	if err := schemas.DefaultLimits().Comparison(c, timeNow()); err != nil {
		t.Fatalf("values do not pass the comparison limits: %v", err)
	}
}

func TestBucket(t *testing.T) {
	edges := []float64{-1, 0.5, 10}
	for x, want := range map[float64]string{-5: "< -1", -1: "[-1, 0.5)", 0.5: "[0.5, 10)", 9.99: "[0.5, 10)", 10: ">= 10"} {
		if got := Bucket(edges, x); got != want {
			t.Errorf("Bucket(%g) = %q, want %q", x, got, want)
		}
	}
}

func timeNow() time.Time { return time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC) }
