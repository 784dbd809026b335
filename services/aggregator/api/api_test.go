package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/api"
	"github.com/understudy-ml/understudy/services/aggregator/internal/pgtest"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

func get(t *testing.T, srv *httptest.Server, path, token string, into any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	if into != nil && resp.StatusCode == http.StatusOK {
		// Strictly: every field the API writes must be a field of the contract (schemas/apiv1).
		dec := json.NewDecoder(resp.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return resp.StatusCode
}

// TestReadAPI stores 30 minutes of windows (a drifted candidate and a noise-baseline copy) and
// reads them back through every endpoint: the experiment listing, statistics with the noise
// floor, a per-window series, alert states; bad parameters get 400 and a missing token 401.
func TestReadAPI(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	st := store.New(db, "g", store.DefaultLevels(time.Minute))
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	r := rand.New(rand.NewPCG(3, 3))
	b := store.Batch{Windows: map[window.Key]*window.Window{}, Counts: map[store.CountKey]int64{}, Offsets: []store.Offset{{Topic: "t", Partition: 0, First: 0, Next: 1}}, ExamplesPerKind: 2}
	picker := window.NewPicker(2, time.Minute)
	seg := window.NewSegmenter(segment.Config{Keys: []segment.Key{{Name: "region", Header: "X-Region"}}})
	for i := range 3000 {
		at := now.Add(-30 * time.Minute).Add(time.Duration(i) * 600 * time.Millisecond)
		cp := r.NormFloat64()
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "fraud", EventTime: at, Status: schemas.StatusComplete,
			Champion: &schemas.Outcome{Prediction: schemas.Number(cp), Latency: time.Millisecond},
			Shadows: []schemas.Outcome{
				{Name: "v7", Role: schemas.RoleCandidate, Prediction: schemas.Number(r.NormFloat64() + 0.8), Latency: 2 * time.Millisecond},
				{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(r.NormFloat64()), Latency: time.Millisecond},
			},
		}
		if i == 7 {
			c.Shadows[0].Error, c.Shadows[0].Status, c.Shadows[0].Body = &schemas.Error{Kind: "http_status", Message: "503 Service Unavailable"}, 503, []byte("overloaded")
			c.RequestBody = []byte(`{"x":7}`)
		}
		c.Segments = []schemas.SegmentValue{{Key: "region", Value: []string{"eu", "us", "ap"}[i%3]}}
		window.FoldSegments(b.Windows, c, time.Minute, nil, window.Compare{}, seg)
		picker.Add(c, window.Compare{})
		b.Counts[store.CountKey{Experiment: c.Experiment, Start: at.Truncate(time.Minute), Status: c.Status}]++
	}
	b.Examples = picker.Examples()
	if _, err := st.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	a := api.New(st, db, alert.Default, stats.DefaultOptions(), "s3cret", slog.New(slog.DiscardHandler), func() time.Time { return now })
	mux := http.NewServeMux()
	a.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	if code := get(t, srv, "/api/v1/experiments", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	var exps apiv1.ExperimentsResponse
	if code := get(t, srv, "/api/v1/experiments", "s3cret", &exps); code != 200 || len(exps.Experiments) != 1 || len(exps.Experiments[0].Shadows) != 2 || exps.Experiments[0].Comparisons[schemas.StatusComplete] != 3000 {
		t.Fatalf("experiments %d %+v", code, exps)
	}
	var sr apiv1.StatsResponse
	if code := get(t, srv, "/api/v1/experiments/fraud/stats?from=1h", "s3cret", &sr); code != 200 || len(sr.Shadows) != 2 {
		t.Fatalf("stats %d %+v", code, sr)
	}
	if len(sr.Verdicts) != 1 || sr.Verdicts[0].Status != alert.StatusFail || !strings.Contains(sr.Verdicts[0].Summary, "latency_p99_ratio") {
		t.Fatalf("verdicts %+v", sr.Verdicts)
	}
	v7 := sr.Shadows[0]
	if v7.Shadow != "v7" || v7.Stats.Total != 3000 || v7.NoiseFloor == nil || v7.Baseline != "copy" {
		t.Fatalf("v7 report %+v", v7)
	}
	if p, f := v7.Stats.Predictions.PSI, v7.NoiseFloor.Predictions.PSI; p == nil || f == nil || *p < 0.3 || *f > 0.05 {
		t.Fatalf("PSI %v, noise floor %v", p, f)
	}
	if r := v7.Stats.Latency.Ratio.P50; r == nil || *r < 1.9 || *r > 2.1 {
		t.Fatalf("p50 latency ratio %v", r)
	}
	var segs apiv1.SegmentsResponse
	if code := get(t, srv, "/api/v1/experiments/fraud/segments?from=1h&metric=error_rate_diff", "s3cret", &segs); code != 200 || segs.Key != "region" || len(segs.Keys) != 1 || len(segs.Shadows) != 2 {
		t.Fatalf("segments %d %+v", code, segs)
	}
	var segTotal uint64
	for _, row := range segs.Shadows[0].Rows {
		segTotal += row.Requests
	}
	if segs.Shadows[0].Shadow != "v7" || len(segs.Shadows[0].Rows) != 3 || segTotal != 3000 || segs.Shadows[0].Rows[0].Contribution == nil {
		t.Fatalf("v7 ranking %+v", segs.Shadows[0])
	}
	if code := get(t, srv, "/api/v1/experiments/fraud/segments?metric=nope", "s3cret", nil); code != http.StatusBadRequest {
		t.Fatalf("unknown metric: %d", code)
	}
	var series apiv1.SeriesResponse
	if code := get(t, srv, "/api/v1/experiments/fraud/windows?from=1h&shadow=v7", "s3cret", &series); code != 200 || series.Width != "1m0s" || len(series.Points) != 30 {
		t.Fatalf("series %d width %s points %d", code, series.Width, len(series.Points))
	}
	var total uint64
	for _, p := range series.Points {
		total += p.Stats.Total
	}
	if total != 3000 {
		t.Fatalf("series counts %d comparisons", total)
	}
	var dist apiv1.Distribution
	if code := get(t, srv, "/api/v1/experiments/fraud/distribution?from=1h&shadow=v7&bins=20", "s3cret", &dist); code != 200 ||
		dist.Kind != "number" || len(dist.Edges) != 21 || len(dist.Champion) != 21 {
		t.Fatalf("distribution %d %+v", code, dist)
	}
	// Shares sum to about 1 (the 0.1 % tails are outside the edges), and the candidate's mass
	// sits higher: it is shifted by 0.8.
	var sc, ss, meanC, meanS float64
	for i := range 20 {
		mid := (dist.Edges[i] + dist.Edges[i+1]) / 2
		sc, ss = sc+dist.Champion[i], ss+dist.ShadowData[i]
		meanC, meanS = meanC+mid*dist.Champion[i], meanS+mid*dist.ShadowData[i]
	}
	if sc < 0.99 || sc > 1.001 || ss < 0.99 || ss > 1.001 || meanS-meanC < 0.6 || meanS-meanC > 1.0 {
		t.Fatalf("shares %.3f %.3f, means %.3f %.3f", sc, ss, meanC, meanS)
	}
	var exs apiv1.ExamplesResponse
	if code := get(t, srv, "/api/v1/experiments/fraud/examples?from=1h&shadow=v7&kind=shadow_error", "s3cret", &exs); code != 200 || len(exs.Examples) != 1 {
		t.Fatalf("examples %d %+v", code, exs)
	}
	if e := exs.Examples[0]; e.RequestID != "7" || e.Answer.Error == nil || e.Answer.Error.Message != "503 Service Unavailable" || e.Answer.Body.Text != "overloaded" || e.Request.Text != `{"x":7}` {
		t.Fatalf("shadow error example %+v", e)
	}
	// One window's worth, as the dashboard asks when a point is clicked: 2 per kind at most.
	start := now.Add(-20 * time.Minute).Format(time.RFC3339)
	end := now.Add(-19 * time.Minute).Format(time.RFC3339)
	if code := get(t, srv, "/api/v1/experiments/fraud/examples?from="+start+"&to="+end+"&shadow=v7", "s3cret", &exs); code != 200 || len(exs.Examples) == 0 || len(exs.Examples) > 2*len(window.ExampleKinds) {
		t.Fatalf("one window's examples: %d, %d examples", code, len(exs.Examples))
	}
	for _, e := range exs.Examples {
		if e.Window.Format(time.RFC3339) != start {
			t.Fatalf("example of window %s in the range of %s", e.Window, start)
		}
	}
	if code := get(t, srv, "/api/v1/experiments/fraud/examples?from=1h", "", nil); code != http.StatusUnauthorized {
		t.Fatalf("examples without the token: %d", code)
	}
	var alerts apiv1.AlertsResponse
	if code := get(t, srv, "/api/v1/alerts?experiment=fraud", "s3cret", &alerts); code != 200 || alerts.Alerts == nil {
		t.Fatalf("alerts %d %+v", code, alerts)
	}
	for _, bad := range []string{
		"/api/v1/experiments/fraud/stats?from=yesterday", "/api/v1/experiments/fraud/stats?from=1h&to=2h",
		"/api/v1/experiments/fraud/windows?width=7m", "/api/v1/alerts/history?limit=0",
		"/api/v1/experiments/fraud/examples?kind=best", "/api/v1/experiments/fraud/examples?limit=0",
	} {
		if code := get(t, srv, bad, "s3cret", nil); code != http.StatusBadRequest {
			t.Fatalf("%s: %d, want 400", bad, code)
		}
	}
}
