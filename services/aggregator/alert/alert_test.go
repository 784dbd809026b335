package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/internal/pgtest"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

func TestParseRules(t *testing.T) {
	rs, err := alert.Parse([]byte(`
experiments:
  fraud:
    - name: psi_critical
      threshold: 0.3
    - name: ks
      disabled: true
    - name: disagreement
      metric: disagreement
      comparator: ">"
      threshold: 0.05
      min_samples: 200
`))
	if err != nil {
		t.Fatal(err)
	}
	byName := func(exp string) map[string]alert.Rule {
		m := map[string]alert.Rule{}
		for _, r := range rs.For(exp) {
			m[r.Name] = r
		}
		return m
	}
	def, fraud := byName("other"), byName("fraud")
	if len(def) != len(alert.DefaultRules()) || def["psi_critical"].Threshold != 0.2 || def["accuracy_diff"].MinSamples != 500 {
		t.Fatalf("defaults %+v", def)
	}
	if fraud["psi_critical"].Threshold != 0.3 || fraud["psi_critical"].For != 3 || fraud["psi_critical"].Severity != alert.SeverityCritical {
		t.Fatalf("override %+v", fraud["psi_critical"])
	}
	if _, ok := fraud["ks"]; ok {
		t.Fatal("disabled rule kept")
	}
	if d := fraud["disagreement"]; d.For != 1 || d.Severity != alert.SeverityWarning || d.MinSamples != 200 || !d.Holds(0.06) || d.Holds(0.05) {
		t.Fatalf("added rule %+v", d)
	}

	_, err = alert.Parse([]byte(`
rules:
  - name: a
    metric: nope
    comparator: "=="
    threshold: 1
    for: 0
    severity: loud
  - name: a
    metric: psi
    comparator: ">="
    threshold: 1
    for: 1
    severity: info
experiments:
  x:
    - name: brand_new
      metric: psi
`))
	if err == nil {
		t.Fatal("invalid rules accepted")
	}
	for _, want := range []string{"unknown metric", "comparator", "for must be", "severity", "duplicate name", "threshold required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not report %q: %v", want, err)
		}
	}
	if _, err := alert.Parse([]byte("rules: [{name: a, metric: psi, comparator: '>=', threshold: 1, for: 1, severity: info, extra: 1}]")); err == nil {
		t.Fatal("unknown field accepted")
	}
}

func TestNext(t *testing.T) {
	r := alert.Rule{For: 2}
	type step struct {
		holds bool
		want  alert.State
	}
	steps := []step{
		{false, alert.StateInactive},
		{true, alert.StatePending},
		{false, alert.StateInactive},
		{true, alert.StatePending},
		{true, alert.StateFiring},
		{true, alert.StateFiring},
		{false, alert.StateResolved},
		{false, alert.StateResolved},
		{true, alert.StatePending},
		{true, alert.StateFiring},
	}
	st, streak := alert.StateInactive, 0
	for i, s := range steps {
		prev := st
		st, streak = alert.Next(st, streak, r, s.holds)
		if st != s.want {
			t.Fatalf("step %d: %s, want %s", i, st, s.want)
		}
		notifies := alert.Notifies(prev, st)
		if want := (st == alert.StateFiring && prev != alert.StateFiring) || (st == alert.StateResolved && prev == alert.StateFiring); notifies != want {
			t.Fatalf("step %d %s→%s notifies %v", i, prev, st, notifies)
		}
	}
}

// windows is an in-memory Source: base windows by shadow and start.
type windows map[window.Key]*window.Window

func (ws windows) ActiveExperiments(_ context.Context, since time.Time) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for k := range ws {
		if !k.Start.Before(since) && !seen[k.Experiment] {
			seen[k.Experiment] = true
			out = append(out, k.Experiment)
		}
	}
	return out, nil
}

func (ws windows) FirstWindow(_ context.Context, exp string) (time.Time, bool, error) {
	var first time.Time
	for k := range ws {
		if k.Experiment == exp && (first.IsZero() || k.Start.Before(first)) {
			first = k.Start
		}
	}
	return first, !first.IsZero(), nil
}

func (ws windows) Range(_ context.Context, exp string, from, to time.Time) (map[string]*window.Window, error) {
	out := map[string]*window.Window{}
	for k, w := range ws {
		if k.Experiment != exp || k.Start.Before(from) || !k.Start.Before(to) {
			continue
		}
		if out[k.Shadow] == nil {
			out[k.Shadow] = window.New()
		}
		if err := out[k.Shadow].Merge(w); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TestEngineTransitionsAndNotifications: a candidate drifting for two evaluation steps goes
// pending then firing, the firing is queued once (re-evaluating a step changes nothing), and a
// step without drift resolves it; the noise-baseline shadow is the noise floor and is never
// alerted on itself.
func TestEngineTransitionsAndNotifications(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	src := windows{}
	r := rand.New(rand.NewPCG(1, 1))
	fill := func(minute int, shift float64) {
		at := t0.Add(time.Duration(minute) * time.Minute)
		for i := range 1000 {
			cp := r.NormFloat64()
			c := schemas.Comparison{
				RequestID: fmt.Sprint(minute, "-", i), Experiment: "e", EventTime: at, Status: schemas.StatusComplete,
				Champion: &schemas.Outcome{Prediction: schemas.Number(cp), Latency: time.Millisecond},
				Shadows: []schemas.Outcome{
					{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Number(r.NormFloat64() + shift), Latency: time.Millisecond},
					{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(r.NormFloat64()), Latency: time.Millisecond},
				},
			}
			window.Fold(src, c, time.Minute, nil, window.Compare{})
		}
	}
	fill(0, 1) // drifted
	fill(1, 1)
	fill(2, 0) // back to normal
	rules, err := alert.Parse([]byte(`rules: [{name: psi, metric: psi, comparator: ">=", threshold: 0.2, min_samples: 500, for: 2, severity: critical}]`))
	if err != nil {
		t.Fatal(err)
	}
	e := alert.NewEngine(alert.Config{Interval: time.Minute, Range: time.Minute, Options: stats.DefaultOptions(), ExternalURL: "http://agg:9104"},
		db, src, func() *alert.Rules { return rules }, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func() time.Time { return t0.Add(time.Hour) })
	states := func() string {
		cs, err := alert.States(ctx, db, "e", "")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, c := range cs {
			out = append(out, c.Shadow+"/"+c.Rule+"="+string(c.State))
		}
		return strings.Join(out, ",")
	}
	for i, want := range []string{"cand/psi=pending", "cand/psi=firing", "cand/psi=firing", "cand/psi=resolved"} {
		end := t0.Add(time.Duration([]int{1, 2, 2, 3}[i]) * time.Minute) // the step ending at 2 twice
		if err := e.Evaluate(ctx, end); err != nil {
			t.Fatal(err)
		}
		if got := states(); got != want {
			t.Fatalf("after step ending %s: %s, want %s", end.Format("15:04"), got, want)
		}
	}
	hist, err := alert.History(ctx, db, "e", time.Time{}, 100)
	if err != nil || len(hist) != 3 {
		t.Fatalf("history %+v %v", hist, err)
	}
	rows, err := db.Query(ctx, `SELECT id, payload FROM webhook_outbox ORDER BY created_at, id`)
	if err != nil {
		t.Fatal(err)
	}
	var payloads []alert.Payload
	for rows.Next() {
		var (
			id string
			b  []byte
			p  alert.Payload
		)
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &p); err != nil || p.Data.ID != id {
			t.Fatalf("payload %s: %v", b, err)
		}
		payloads = append(payloads, p)
	}
	if len(payloads) != 2 || payloads[0].Type != "alert.firing" || payloads[1].Type != "alert.resolved" {
		t.Fatalf("notifications %+v", payloads)
	}
	f := payloads[0].Data
	if f.Value == nil || *f.Value < 0.2 || f.NoiseFloor == nil || *f.NoiseFloor > 0.05 || f.Samples != 1000 || f.Shadow != "cand" ||
		f.Version != apiv1.PayloadVersion || !strings.HasPrefix(f.Links.Stats, "http://agg:9104/api/v1/experiments/e/stats?from=") {
		t.Fatalf("firing payload %+v value %v floor %v", f, f.Value, f.NoiseFloor)
	}
	// The evidence travels with the alert: PSI is judged on its estimate alone (threshold
	// only), so there is no interval to send, the status is FAIL and the reason says so.
	if f.Interval.Low != nil || f.Interval.High != nil || f.Status != alert.StatusFail || !strings.Contains(f.Reason, "threshold only") {
		t.Fatalf("firing evidence interval %v..%v status %q reason %q", f.Interval.Low, f.Interval.High, f.Status, f.Reason)
	}
	if h := hist[1]; h.To != alert.StateFiring || h.Status != alert.StatusFail || h.Reason != f.Reason {
		t.Fatalf("history row %+v does not keep the firing evidence", h)
	}
	if h := hist[2]; h.To != alert.StateResolved || h.Status == alert.StatusFail {
		t.Fatalf("resolved history row %+v", h)
	}
	if want := alert.MessageID("e", "cand", "psi", hist[1].ID, alert.StateFiring); f.ID != want {
		t.Fatalf("id %s, want %s", f.ID, want)
	}
	slack, err := alert.SlackBody(mustJSON(t, payloads[0]))
	if err != nil || !strings.Contains(string(slack), "FIRING") || !strings.Contains(string(slack), "e/cand") {
		t.Fatalf("slack body %s %v", slack, err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestExampleFileSpellsOutTheDefaults: deploy/alert-rules.example.yaml parses, and its rules
// are exactly DefaultRules.
func TestExampleFileSpellsOutTheDefaults(t *testing.T) {
	rs, err := alert.Load("../../../deploy/alert-rules.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	got, want := rs.For("any"), alert.Default().For("any")
	if len(got) != len(want) {
		t.Fatalf("%d rules, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("rule %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(rs.For("fraud-v7")) != len(want) { // one disabled, one added
		t.Fatalf("fraud-v7 rules %+v", rs.For("fraud-v7"))
	}
}

// TestAlertKeepsTheInterval: an alert on a rule with an interval (the p99 latency ratio, here
// against the copy) stores the interval it fired on, which lies beyond the threshold.
func TestAlertKeepsTheInterval(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	src := windows{}
	r := rand.New(rand.NewPCG(2, 2))
	lat := func(median float64) time.Duration {
		return time.Duration(median * float64(time.Millisecond) * (1 + 0.2*r.Float64()))
	}
	for i := range 5000 {
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "e", EventTime: t0, Status: schemas.StatusComplete,
			Champion: &schemas.Outcome{Prediction: schemas.Number(0.5), Latency: lat(1)},
			Shadows: []schemas.Outcome{
				{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Number(0.5), Latency: lat(3)},
				{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(0.5), Latency: lat(1)},
			},
		}
		window.Fold(src, c, time.Minute, nil, window.Compare{})
	}
	rules, err := alert.Parse([]byte(`rules: [{name: slow, metric: latency_p99_ratio, comparator: ">=", threshold: 1.5, min_samples: 500, for: 1, severity: warning}]`))
	if err != nil {
		t.Fatal(err)
	}
	e := alert.NewEngine(alert.Config{Interval: time.Minute, Range: time.Minute, Options: stats.DefaultOptions()},
		db, src, func() *alert.Rules { return rules }, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), func() time.Time { return t0.Add(time.Hour) })
	if err := e.Evaluate(ctx, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	cs, err := alert.States(ctx, db, "e", alert.StateFiring)
	if err != nil || len(cs) != 1 {
		t.Fatalf("firing states %+v %v", cs, err)
	}
	c := cs[0]
	if c.Interval.Low == nil || c.Interval.High == nil || *c.Interval.Low < 1.5 || *c.Interval.Low > *c.Value || *c.Interval.High < *c.Value || c.Status != alert.StatusFail {
		t.Fatalf("firing state %+v: interval %v..%v", c, c.Interval.Low, c.Interval.High)
	}
	hist, err := alert.History(ctx, db, "e", time.Time{}, 10)
	if err != nil || len(hist) != 1 || hist[0].Interval.Low == nil || *hist[0].Interval.Low != *c.Interval.Low || !strings.Contains(hist[0].Reason, "beyond the threshold 1.5") {
		t.Fatalf("history %+v %v", hist, err)
	}
}
