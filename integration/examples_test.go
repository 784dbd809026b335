package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/platform/segment"
	"github.com/understudy-ml/understudy/services/understudy/demo"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
)

// TestExamplesShowTheRequestsBehindTheNumbers runs a candidate that answers as the champion
// except on a known segment (first feature above 1.5: its scores are 0.4 higher) and fails a
// known set of requests with 503 and a body, through the real broker and Postgres. The read
// API and the CLI must return exactly those disagreeing requests as the largest differences
// and those failures, with their payloads: the captured request body, both answers' bodies,
// the shadow's status, error message and body.
func TestExamplesShowTheRequestsBehindTheNumbers(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	experiment := fmt.Sprintf("examples-%d", time.Now().UnixNano())
	seed := freshSeed()
	const n = 400
	champion := demo.Champion()
	drifted := *champion
	drifted.DriftAbove, drifted.DriftShift = 1.5, 0.4
	failing := map[string]bool{}
	disagreeing := map[string]bool{}
	bodies := map[string][]byte{}
	for i := range n {
		r := demo.NewRequest(seed, i)
		bodies[r.ID] = r.Body
		switch {
		case i%37 == 0:
			failing[r.ID] = true
		case r.Features[0] > 1.5:
			disagreeing[r.ID] = true
		}
	}
	if len(disagreeing) < 5 || len(failing) < 5 {
		t.Fatalf("the stream has %d disagreeing and %d failing requests; the test needs 5 of each", len(disagreeing), len(failing))
	}
	candidate := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct{ ID string }
		_ = json.Unmarshal(body, &req)
		if failing[req.ID] {
			http.Error(w, "overloaded: "+req.ID, http.StatusServiceUnavailable)
			return
		}
		code, out := drifted.Respond(body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write(out)
	}))
	defer candidate.Close()

	ensureTopics(ctx, t)
	p := startPipeline(ctx, t, pipeline.Options{
		Brokers: broker.Brokers, DatabaseURL: postgres.URL, Experiment: experiment,
		ChampionURL: serve(t, champion), ShadowURL: candidate.URL, JoinWindow: 30 * time.Second,
		Segments: []segment.Key{
			{Name: "feature_0", Pointer: "/inputs/0/data/0", Buckets: []float64{0, 1.5}},
			{Name: "region", Header: "X-Region"}, // never sent: every request is counted under unknown
		},
	})
	if res := demo.Traffic(ctx, p.ProxyURL, champion.Name, seed, n, 0, 8, champion, nil); res.OK != n || res.Mismatched != 0 {
		t.Fatalf("traffic: %+v", res)
	}
	db, err := pgxpool.New(ctx, postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	waitCounts(ctx, t, db, experiment, n)

	api := p.OpsURLs["aggregator"]
	get := func(kind string) []apiv1.Example {
		t.Helper()
		var out apiv1.ExamplesResponse
		url := fmt.Sprintf("%s/api/v1/experiments/%s/examples?from=1h&shadow=candidate&kind=%s&limit=1000", api, experiment, kind)
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", url, resp.Status)
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return out.Examples
	}
	diffs := get(apiv1.ExampleDifference)
	if len(diffs) == 0 {
		t.Fatal("no difference examples")
	}
	for _, e := range diffs {
		if !disagreeing[e.RequestID] {
			t.Errorf("difference example %s (score %.3f) is not one of the drifted segment's requests", e.RequestID, e.Score)
		}
		if !bytes.Equal(e.Request.Bytes(), bodies[e.RequestID]) {
			t.Errorf("%s: request body %q, the caller sent %q", e.RequestID, e.Request.Bytes(), bodies[e.RequestID])
		}
		if _, want := champion.Respond(bodies[e.RequestID]); e.Champion.Body.Text != string(want) {
			t.Errorf("%s: champion body %q, want %q", e.RequestID, e.Champion.Body.Text, want)
		}
		if _, want := drifted.Respond(bodies[e.RequestID]); e.Answer.Body.Text != string(want) {
			t.Errorf("%s: shadow body %q, want %q", e.RequestID, e.Answer.Body.Text, want)
		}
	}
	errs := get(apiv1.ExampleShadowError)
	if len(errs) == 0 {
		t.Fatal("no shadow error examples")
	}
	for _, e := range errs {
		if !failing[e.RequestID] || e.Answer.Status != http.StatusServiceUnavailable || e.Answer.Error == nil ||
			!strings.Contains(e.Answer.Body.Text, "overloaded: "+e.RequestID) {
			t.Errorf("shadow error example %s: %+v", e.RequestID, e.Answer)
		}
	}
	t.Logf("%d difference examples, all from the drifted segment (top score %.3f); %d shadow errors with their payloads",
		len(diffs), diffs[0].Score, len(errs))

	// The CLI reads the same through the API.
	bin, err := harness.BuildService(ctx, "understudy", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, bin, "examples", "--api="+api, "--experiment="+experiment, "--kind=shadow_error", "--from=1h").CombinedOutput()
	if err != nil {
		t.Fatalf("understudy examples: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), errs[0].RequestID) || !strings.Contains(string(out), "overloaded: "+errs[0].RequestID) || !strings.Contains(string(out), "503") {
		t.Fatalf("understudy examples does not show %s's error payload:\n%s", errs[0].RequestID, out)
	}
	// The segment ranking (understudy report --by segment) puts the drifted segment first,
	// by drift (PSI and KS: its scores move without crossing the decision threshold, so
	// disagreement stays 0 everywhere), and counts every request of an unreadable key as unknown.
	ranking := func(args ...string) apiv1.SegmentRanking {
		t.Helper()
		out, err := exec.CommandContext(ctx, bin, append([]string{"report", "--by=segment", "--format=json", "--api=" + api, "--experiment=" + experiment, "--from=1h"}, args...)...).Output()
		if err != nil {
			t.Fatalf("understudy report --by segment %v: %v\n%s", args, err, out)
		}
		var r apiv1.SegmentsResponse
		if err := json.Unmarshal(out, &r); err != nil || len(r.Shadows) != 1 {
			t.Fatalf("understudy report --by segment %v: %v\n%s", args, err, out)
		}
		return r.Shadows[0]
	}
	for _, metric := range []string{"psi", "ks"} {
		r := ranking("--segment-key=feature_0", "--metric="+metric)
		if len(r.Rows) == 0 || r.Rows[0].Value != ">= 1.5" {
			for _, row := range r.Rows {
				t.Logf("by %s: %s contribution %+v", metric, row.Value, row.Contribution)
			}
			t.Errorf("by %s, the drifted segment is not ranked first", metric)
		}
		var requests uint64
		for _, row := range r.Rows {
			requests += row.Requests
		}
		if requests != n {
			t.Errorf("by %s, the feature_0 rows hold %d requests, want %d", metric, requests, n)
		}
		t.Logf("by %s: first %s, contribution %+v of overall %+v", metric, r.Rows[0].Value, r.Rows[0].Contribution, r.Overall)
	}
	if r := ranking("--segment-key=region"); len(r.Rows) != 1 || r.Rows[0].Value != "unknown" || r.Rows[0].Requests != n {
		t.Errorf("a header no request carries: %+v, want every request under unknown", r.Rows)
	}
}
