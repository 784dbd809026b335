package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// fakeAPI answers the read API's endpoints with fixed bodies, requiring a bearer token.
func fakeAPI(t *testing.T) *httptest.Server {
	t.Helper()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	v := 0.31
	bodies := map[string]any{
		"/api/v1/experiments": apiv1.ExperimentsResponse{Experiments: []apiv1.Experiment{{Name: "fraud-v7", Shadows: []apiv1.Shadow{{Name: "candidate", Role: "candidate", First: t0, Last: t0, Total: 6000}}}}},
		"/api/v1/alerts":      apiv1.AlertsResponse{Alerts: []apiv1.Current{{Experiment: "fraud-v7", Shadow: "candidate", Rule: "psi_critical", State: apiv1.StateFiring, Value: &v, Since: t0}}},
		"/api/v1/alerts/history": apiv1.HistoryResponse{Transitions: []apiv1.Transition{{
			ID: 1, Experiment: "fraud-v7", Shadow: "candidate", Rule: "psi_critical",
			Severity: "critical", From: apiv1.StatePending, To: apiv1.StateFiring, Value: &v, At: t0,
		}}},
		"/api/v1/experiments/fraud-v7/stats": apiv1.StatsResponse{Experiment: "fraud-v7", From: t0, To: t0.Add(time.Hour)},
		"/api/v1/experiments/fraud-v7/segments": apiv1.SegmentsResponse{Experiment: "fraud-v7", Key: "f0", Keys: []string{"f0"}, Metric: "disagreement", Shadows: []apiv1.SegmentRanking{{
			Shadow: "candidate", Role: "candidate", Baseline: "copy", Overall: &apiv1.Estimate{Value: 0.16, Low: 0.15, High: 0.17},
			Rows: []apiv1.SegmentRow{
				{Value: ">= 1", Requests: 1600, Share: 0.16, Contribution: &apiv1.Estimate{Value: 0.15, Low: 0.14, High: 0.16}, Floor: &apiv1.Estimate{Value: 0, Low: 0, High: 0.001}, Differs: true},
				{Value: "< 0", Requests: 5000, Share: 0.5, Contribution: &apiv1.Estimate{Value: 0.01, Low: 0, High: 0.02}},
			},
		}}},
		"/api/v1/experiments/fraud-v7/examples": apiv1.ExamplesResponse{Experiment: "fraud-v7", Examples: []apiv1.Example{{
			Shadow: "candidate", Window: t0, Kind: apiv1.ExampleShadowError, Score: 0.5, RequestID: "req-42",
			Request:  apiv1.Body{Text: `{"inputs":[1.5]}`},
			Champion: apiv1.Answer{Model: "fraud", Status: 200, Value: 0.25, LatencyMS: 3},
			Answer:   apiv1.Answer{Model: "candidate", Status: 503, Error: &apiv1.AnswerError{Kind: "http_status", Message: "503 Service Unavailable"}, Body: apiv1.Body{Text: "model overloaded"}},
		}}},
	}
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"token"}`, http.StatusUnauthorized)
			return
		}
		b, ok := bodies[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(b)
	}))
}

func TestAPICommands(t *testing.T) {
	srv := fakeAPI(t)
	defer srv.Close()
	api := []string{"--api=" + srv.URL, "--api-token=tok"}
	for _, tc := range []struct {
		name string
		run  func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int
		args []string
		want []string
		code int
	}{
		{"experiments list", wrap(runExperiments), append([]string{"list"}, api...), []string{"fraud-v7", "candidate", "6000"}, 0},
		{"alerts list", wrap(runAlerts), append([]string{"list"}, api...), []string{"psi_critical", "firing", "0.31"}, 0},
		{"alerts history", wrap(runAlerts), append([]string{"list", "--history"}, api...), []string{"pending → firing", "critical"}, 0},
		{"examples", wrap(runExamples), append([]string{"--experiment=fraud-v7", "--kind=shadow_error"}, api...), []string{"req-42", "shadow_error", "0.25 (200", "shadow http_status: 503 Service Unavailable; body model overloaded", `{"inputs":[1.5]}`}, 0},
		{"examples json", wrap(runExamples), append([]string{"--experiment=fraud-v7", "--format=json"}, api...), []string{`"request_id": "req-42"`, `"message": "503 Service Unavailable"`}, 0},
		{"report by segment", wrap(runReport), append([]string{"--experiment=fraud-v7", "--by=segment"}, api...), []string{"by segment f0", "noise floor: copy", "1     >= 1", "0.15 [0.14, 0.16]", "yes"}, 0},
		{"report", wrap(runReport), append([]string{"--experiment=fraud-v7", "--format=markdown"}, api...), []string{"Experiment fraud-v7", "No comparisons in this range."}, 3}, // nothing judged: not decidable
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := tc.run(context.Background(), tc.args, &out, &errOut); code != tc.code {
				t.Fatalf("exit %d: %s", code, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Fatalf("output lacks %q:\n%s", w, out.String())
				}
			}
		})
	}
	// A wrong token is an error, reported, with exit code 1.
	var out, errOut bytes.Buffer
	if code := runExperiments(context.Background(), []string{"list", "--api=" + srv.URL, "--api-token=bad"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "401") {
		t.Fatalf("bad token: exit %d, %s", code, errOut.String())
	}
	// Invalid examples flags list every problem.
	errOut.Reset()
	if code := runExamples(context.Background(), []string{"--kind=best", "--format=xml", "--limit=0"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "experiment: required") || !strings.Contains(errOut.String(), `kind: "best"`) ||
		!strings.Contains(errOut.String(), "format") || !strings.Contains(errOut.String(), "limit") {
		t.Fatalf("invalid examples flags: exit %d, %s", code, errOut.String())
	}
	// Invalid report flags list every problem.
	errOut.Reset()
	if code := runReport(context.Background(), []string{"--from=yesterday", "--by=shadow", "--top=0"}, &out, &errOut); code != 2 ||
		!strings.Contains(errOut.String(), "experiment: required") || !strings.Contains(errOut.String(), `"yesterday"`) ||
		!strings.Contains(errOut.String(), `by: "shadow"`) || !strings.Contains(errOut.String(), "top: must be") {
		t.Fatalf("invalid flags: exit %d, %s", code, errOut.String())
	}
}

func wrap(f func(context.Context, []string, io.Writer, io.Writer) int) func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) int {
	return func(ctx context.Context, args []string, out, errOut *bytes.Buffer) int {
		return f(ctx, args, out, errOut)
	}
}

func TestCompletion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := runCompletion(context.Background(), []string{"bash"}, &out, &errOut); code != 0 {
		t.Fatal(errOut.String())
	}
	for _, w := range []string{"complete -F _understudy understudy", "report", "--experiment", "experiments"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("completion lacks %q:\n%s", w, out.String())
		}
	}
	if code := runCompletion(context.Background(), []string{"fish"}, &out, &errOut); code != 2 {
		t.Fatal("fish accepted")
	}
}
