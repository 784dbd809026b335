package alert_test

import (
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// experiment folds n requests into per-shadow windows: the champion, a candidate made by cand
// and an exact copy ("copy", the noise baseline). Every 20th request is malformed: every model
// answers it 400. Labels arrive for every request; the champion is right on 90 %.
func experiment(n int, cand func(i int, champion schemas.Outcome) schemas.Outcome) []stats.ShadowReport {
	ws := map[window.Key]*window.Window{}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		label := schemas.Label("a")
		pred := label
		if i%10 == 0 {
			pred = schemas.Label("b")
		}
		champ := schemas.Outcome{Role: schemas.RoleChampion, Status: 200, Prediction: pred, Latency: time.Duration(10+i%7) * time.Millisecond}
		if i%20 == 1 {
			champ.Status, champ.Prediction = 400, schemas.Prediction{}
		}
		copyOut := champ
		copyOut.Name, copyOut.Role = "copy", schemas.RoleNoiseBaseline
		copyOut.Latency = time.Duration(10+(i*3)%7) * time.Millisecond
		c := cand(i, champ)
		c.Name, c.Role = "cand", schemas.RoleCandidate
		cmp := schemas.Comparison{RequestID: "r", Experiment: "x", EventTime: t0.Add(time.Duration(i) * time.Millisecond), Champion: &champ, Shadows: []schemas.Outcome{c, copyOut}}
		window.Fold(ws, cmp, time.Hour, nil, window.Compare{})
		cmp.Label = &schemas.LabelValue{Value: label}
		window.Fold(ws, cmp, time.Hour, nil, window.Compare{})
	}
	merged := map[string]*window.Window{}
	for k, w := range ws {
		merged[k.Shadow] = w
	}
	return stats.Report(merged, stats.DefaultOptions())
}

func candidate(reps []stats.ShadowReport) stats.ShadowReport {
	for _, r := range reps {
		if r.Shadow == "cand" {
			return r
		}
	}
	panic("no candidate")
}

func same(i int, champion schemas.Outcome) schemas.Outcome {
	o := champion
	o.Latency = time.Duration(10+(i*5)%7) * time.Millisecond
	return o
}

var week = alert.Judgement{Decision: alert.DefaultDecision(), Observed: 7 * 24 * time.Hour}

func TestIdenticalCandidatePasses(t *testing.T) {
	rep := candidate(experiment(20000, same))
	if !rep.Stats.Latency.LikeForLike || rep.Stats.Latency.Reference != "noise_baseline:copy" {
		t.Fatalf("latency reference %q", rep.Stats.Latency.Reference)
	}
	v := alert.Judge(alert.DefaultRules(), rep, week)
	if v.Status != alert.StatusPass {
		t.Fatalf("identical candidate: %s", v.Summary)
	}
	for _, r := range v.Rules {
		if r.Rule == "error_rate_diff" && (r.Estimate == nil || r.Estimate.Value != 0) {
			t.Fatalf("a request both models reject counted against the copy: %+v", r)
		}
	}
	short := week
	short.Observed = 10 * time.Minute
	if v := alert.Judge(alert.DefaultRules(), rep, short); v.Status != alert.StatusContinue || !strings.Contains(v.Summary, "of the minimum 1h0m0s") {
		t.Fatalf("before the minimum duration: %s", v.Summary)
	}
}

func TestWorseCandidateFailsForTheRightRule(t *testing.T) {
	rep := candidate(experiment(20000, func(i int, champion schemas.Outcome) schemas.Outcome {
		o := same(i, champion)
		if i%10 == 5 && o.Status == 200 {
			o.Prediction = schemas.Label("b") // 10 points less accurate
		}
		return o
	}))
	v := alert.Judge(alert.DefaultRules(), rep, week)
	if v.Status != alert.StatusFail {
		t.Fatalf("worse candidate: %s", v.Summary)
	}
	for _, r := range v.Rules {
		if want := r.Rule == "accuracy_diff"; (r.Status == alert.StatusFail) != want {
			t.Fatalf("rule %s: %s (%s)", r.Rule, r.Status, r.Reason)
		}
	}
}

func TestSlowerCandidateFailsLatencyAgainstTheCopy(t *testing.T) {
	rep := candidate(experiment(20000, func(i int, champion schemas.Outcome) schemas.Outcome {
		o := same(i, champion)
		o.Latency = o.Latency * 3 / 2
		return o
	}))
	v := alert.Judge(alert.DefaultRules(), rep, week)
	for _, r := range v.Rules {
		if r.Rule == "latency_p99_ratio" && r.Status != alert.StatusFail {
			t.Fatalf("latency rule: %s %s", r.Status, r.Reason)
		}
	}
}

func TestBrokenCopyIsAnInstrumentError(t *testing.T) {
	reps := experiment(20000, same)
	// Make the copy fail on 5 % of requests the champion answered: its own error rule breaches.
	for i := range reps {
		if reps[i].Shadow == "cand" {
			fl := reps[i].NoiseFloor
			broken := experiment(20000, func(i int, champion schemas.Outcome) schemas.Outcome {
				o := same(i, champion)
				if i%20 == 3 {
					o.Status, o.Prediction = 503, schemas.Prediction{}
				}
				return o
			})
			*fl = candidate(broken).Stats
		}
	}
	v := alert.Judge(alert.DefaultRules(), candidate(reps), week)
	if v.Status != alert.StatusInstrumentError || !strings.Contains(v.Summary, "error_rate_diff") {
		t.Fatalf("broken copy: %s", v.Summary)
	}
}

func TestInvalidRulesListEveryProblem(t *testing.T) {
	_, err := alert.Parse([]byte(`
rules:
  - {name: a, metric: nope, comparator: ">=", threshold: 1, min_samples: 100, for: 1, severity: warning}
  - {name: b, metric: accuracy_diff, comparator: ">=", threshold: 0.01, min_samples: 100, for: 1, severity: warning}
  - {name: c, metric: coverage, comparator: "<", threshold: 2, min_samples: 100, for: 1, severity: warning, margin: -1}
  - {name: d, metric: error_rate_diff, comparator: ">=", threshold: 0.01, min_samples: 5, for: 1, severity: warning}
decision: {alpha: 2}
`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`unknown metric "nope"`, "comparator >= contradicts accuracy_diff", "threshold 2 is outside", "margin -1", "min_samples 5 is below 30", "alpha 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}
