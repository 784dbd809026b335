package report

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

func f(v float64) *float64 { return &v }

func sample() Data {
	t0 := time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	cand := apiv1.Stats{Total: 6000, Coverage: f(1), Statuses: map[string]uint64{"complete": 6000}, NotShadowed: map[string]uint64{"rate_limited": 3}}
	cand.Latency.Champion = apiv1.Quantiles{P50: f(0.25), P95: f(1.05), P99: f(1.99)}
	cand.Latency.Shadow = apiv1.Quantiles{P50: f(2.86), P95: f(4.07), P99: f(5.39)}
	cand.Latency.Ratio.P99 = f(2.707)
	cand.Versions = apiv1.Versions{Champion: map[string]uint64{"6": 6000}, Shadow: map[string]uint64{"7": 6000}}
	cand.Predictions = apiv1.Predictions{Kind: "number", PSI: f(0.2893), KS: f(0.1659), Agreement: f(0.9068)}
	cand.Labels = apiv1.Labels{
		N: 6000, Shown: true, MinLabels: 100,
		Champion: apiv1.LabelMetrics{Accuracy: f(0.7712)}, Shadow: apiv1.LabelMetrics{Accuracy: f(0.7903)},
		Difference: &apiv1.Difference{Metric: "accuracy", Value: f(0.0192), Low: f(0.0115), High: f(0.0269), N: 6000},
	}
	floor := apiv1.Stats{Total: 6000, Coverage: f(1)}
	floor.Predictions = apiv1.Predictions{Kind: "number", PSI: f(0.0001), KS: f(0.0014), Agreement: f(0.999)}
	return Data{
		Stats: apiv1.StatsResponse{Experiment: "fraud-v7", From: t0, To: t0.Add(time.Hour), Shadows: []apiv1.ShadowReport{
			{Shadow: "candidate", Role: "candidate", Stats: cand, NoiseFloor: &floor, Baseline: "champion-copy"},
			{Shadow: "champion-copy", Role: "noise_baseline", Stats: floor},
		}, Verdicts: []apiv1.Verdict{{
			Shadow: "candidate", Status: apiv1.StatusFail, Alpha: 0.05, Observed: 2 * time.Hour, MinDuration: time.Hour,
			Rules: []apiv1.RuleResult{
				{Rule: "accuracy_diff", Status: apiv1.StatusPass, Estimate: &apiv1.Estimate{Value: 0.0192, Low: 0.0101, High: 0.0283, N: 6000, Method: apiv1.MethodMeanCS}, Reason: "on the good side"},
				{Rule: "psi_critical", Status: apiv1.StatusFail, Estimate: &apiv1.Estimate{Value: 0.2893, Low: 0.2893, High: 0.2893, N: 6000, Method: apiv1.MethodThreshold}, Reason: "psi = 0.2893"},
			},
			Summary: "candidate: FAIL, 1 rule(s) failed: psi_critical",
		}}},
		History: []apiv1.Transition{{Shadow: "candidate", Rule: "psi_critical", Severity: "critical", From: apiv1.StatePending, To: apiv1.StateFiring, At: t0.Add(time.Minute)}},
	}
}

func TestWriteFormats(t *testing.T) {
	d := sample()
	var table, md, js bytes.Buffer
	for format, buf := range map[string]*bytes.Buffer{"table": &table, "markdown": &md, "json": &js} {
		if err := Write(buf, d, format); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{
		"candidate vs champion", "noise floor (champion-copy)", "0.2893", "0.0001", "77.12 %", "79.03 %",
		"+1.92 points [+1.15, +2.69] (95 % CI, this look only; n=6000)", "rate_limited=3", "psi_critical (critical, 10:01:00)", "Verdict: candidate: FAIL", "0.0192 [0.0101, 0.0283]", "0.2893 (threshold only)",
		"family-wise α = 0.05, observed 2h0m0s", "not compared like for like",
	} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if !regexp.MustCompile(`model versions +6 +7 +–`).MatchString(table.String()) {
		t.Errorf("versions row:\n%s", table.String())
	}
	if strings.Contains(table.String(), "mixes") {
		t.Error("one version reported as mixed")
	}
	if strings.Contains(table.String(), "champion-copy vs champion") {
		t.Error("the noise baseline got its own section")
	}
	if !strings.Contains(md.String(), "### candidate vs champion") || !strings.Contains(md.String(), "| prediction PSI vs champion |  | 0.2893 | 0.0001 |") {
		t.Errorf("markdown:\n%s", md.String())
	}
	var back Data
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || back.Stats.Experiment != "fraud-v7" || len(back.History) != 1 {
		t.Fatalf("json round trip: %v %+v", err, back)
	}
	if err := Write(&table, d, "yaml"); err == nil {
		t.Fatal("unknown format accepted")
	}
	// Two versions of the candidate in one range are named, with their answers, and said to mix.
	d.Stats.Shadows[0].Stats.Versions.Shadow = map[string]uint64{"7": 4000, "8": 2000}
	table.Reset()
	_ = Write(&table, d, "table")
	if !strings.Contains(table.String(), "7 (4000), 8 (2000)") || !strings.Contains(table.String(), "This range mixes 2 versions of candidate") {
		t.Errorf("mixed versions:\n%s", table.String())
	}
	// Labels below the minimum are not shown as numbers.
	d.Stats.Shadows[0].Stats.Labels = apiv1.Labels{N: 40, MinLabels: 100}
	table.Reset()
	_ = Write(&table, d, "table")
	if !strings.Contains(table.String(), "waiting for labels (40 of 100)") {
		t.Errorf("label gate:\n%s", table.String())
	}
}

func TestExitCode(t *testing.T) {
	d := sample()
	if c := ExitCode(d, ""); c != ExitFail {
		t.Fatalf("FAIL → %d", c)
	}
	d.Stats.Verdicts[0].Status = apiv1.StatusContinue
	if c := ExitCode(d, ""); c != ExitContinue {
		t.Fatalf("CONTINUE → %d", c)
	}
	d.Stats.Verdicts[0].Status = apiv1.StatusInstrumentError
	if c := ExitCode(d, ""); c != ExitContinue {
		t.Fatalf("INSTRUMENT_ERROR → %d", c)
	}
	d.Stats.Verdicts[0].Status = apiv1.StatusPass
	if c := ExitCode(d, ""); c != ExitPass {
		t.Fatalf("PASS → %d", c)
	}
	if c := ExitCode(d, "other"); c != ExitContinue {
		t.Fatalf("no verdict for the shadow asked → %d", c)
	}
}
