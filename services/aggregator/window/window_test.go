package window

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/sketch"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func cmp(id string, at time.Time, champ, shadow float64, shadowErr string) schemas.Comparison {
	c := schemas.Comparison{
		RequestID: id, Experiment: "e", EventTime: at, Status: schemas.StatusComplete,
		Champion: &schemas.Outcome{Name: "m", Prediction: schemas.Number(champ), Latency: time.Millisecond},
		Shadows:  []schemas.Outcome{{Name: "v7", Prediction: schemas.Number(shadow), Latency: 3 * time.Millisecond}},
	}
	if shadowErr != "" {
		c.Status = schemas.StatusShadowError
		c.Shadows[0].Error = &schemas.Error{Kind: shadowErr}
		c.Shadows[0].Prediction = schemas.Prediction{}
	}
	return c
}

func TestFoldCountsAgreementAndLabels(t *testing.T) {
	ws := map[Key]*Window{}
	Fold(ws, cmp("a", t0, 0.9, 0.8, ""), time.Minute)                     // agree
	Fold(ws, cmp("b", t0.Add(10*time.Second), 0.2, 0.7, ""), time.Minute) // disagree
	Fold(ws, cmp("c", t0.Add(20*time.Second), 0.4, 0, "timeout"), time.Minute)
	Fold(ws, cmp("d", t0.Add(90*time.Second), 0.1, 0.1, ""), time.Minute) // next window
	nan := cmp("e", t0, 0.5, math.NaN(), "")
	Fold(ws, nan, time.Minute)
	labeled := cmp("a", t0, 0.9, 0.8, "")
	labeled.Label = &schemas.LabelValue{Value: schemas.Number(1)}
	Fold(ws, labeled, time.Minute)

	w := ws[Key{"e", "v7", t0}]
	if w == nil || len(ws) != 2 {
		t.Fatalf("windows %v", ws)
	}
	if w.Total != 4 || w.Statuses[schemas.StatusComplete] != 3 || w.Statuses[schemas.StatusShadowError] != 1 {
		t.Fatalf("counts %d %v", w.Total, w.Statuses)
	}
	if w.Shadow.Errors["timeout"] != 1 || w.Shadow.NonFinite != 1 || w.Compared != 2 || w.Agree != 1 {
		t.Fatalf("errors %v non-finite %d compared %d agree %d", w.Shadow.Errors, w.Shadow.NonFinite, w.Compared, w.Agree)
	}
	if w.Champion.Latency.Count() != 4 || w.Shadow.Predictions.Count() != 2 || w.Champion.Predictions.Count() != 4 {
		t.Fatalf("digests %d %d %d", w.Champion.Latency.Count(), w.Shadow.Predictions.Count(), w.Champion.Predictions.Count())
	}
	// The labeled comparison adds label metrics only: |0.9−1| and |0.8−1|, log loss −ln 0.9.
	cl, sl := w.Champion.Labels, w.Shadow.Labels
	if cl.N != 1 || sl.N != 1 || math.Abs(cl.AbsErr-0.1) > 1e-12 || math.Abs(sl.SqErr-0.04) > 1e-12 || math.Abs(cl.LogLoss+math.Log(0.9)) > 1e-12 {
		t.Fatalf("labels %+v %+v", cl, sl)
	}
	// Class labels: accuracy counts.
	c := schemas.Comparison{
		Experiment: "e", EventTime: t0, Label: &schemas.LabelValue{Value: schemas.Label("fraud")},
		Champion: &schemas.Outcome{Prediction: schemas.Label("fraud")}, Shadows: []schemas.Outcome{{Name: "v7", Prediction: schemas.Label("ok")}},
	}
	Fold(ws, c, time.Minute)
	if w.Champion.Labels.Correct != 1 || w.Shadow.Labels.Correct != 0 || w.Shadow.Labels.N != 2 {
		t.Fatalf("class labels %+v %+v", w.Champion.Labels, w.Shadow.Labels)
	}
}

// TestMergeEqualsFoldingAll: windows folded in parts and merged (after a JSON round trip, as
// stored) equal the window folded at once, for counts and, within digest accuracy, statistics.
func TestMergeEqualsFoldingAll(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all, parts := map[Key]*Window{}, []map[Key]*Window{{}, {}, {}}
	for i := range 30000 {
		c := cmp(fmt.Sprint(i), t0.Add(time.Duration(r.IntN(60))*time.Second), r.Float64(), r.Float64()*0.9+0.05, "")
		if i%50 == 0 {
			c = cmp(fmt.Sprint(i), t0, 0.3, 0, "circuit_open")
		}
		Fold(all, c, time.Minute)
		Fold(parts[i%3], c, time.Minute)
	}
	merged := New()
	for _, p := range parts {
		b, err := json.Marshal(p[Key{"e", "v7", t0}])
		if err != nil {
			t.Fatal(err)
		}
		var back Window
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if err := merged.Merge(&back); err != nil {
			t.Fatal(err)
		}
	}
	want := all[Key{"e", "v7", t0}]
	if merged.Total != want.Total || merged.Agree != want.Agree || merged.Compared != want.Compared ||
		merged.Shadow.Errors["circuit_open"] != want.Shadow.Errors["circuit_open"] || merged.Diff.Count() != want.Diff.Count() {
		t.Fatalf("merged %+v, want %+v", merged, want)
	}
	psiM, ksM := sketch.Compare(merged.Champion.Predictions, merged.Shadow.Predictions, 10)
	psiW, ksW := sketch.Compare(want.Champion.Predictions, want.Shadow.Predictions, 10)
	if math.Abs(psiM-psiW) > 0.005 || math.Abs(ksM-ksW) > 0.005 {
		t.Fatalf("merged PSI %.4f KS %.4f, folded at once %.4f %.4f", psiM, ksM, psiW, ksW)
	}
	if p99 := merged.Shadow.Latency.Quantile(0.99); p99 != 3000 {
		t.Fatalf("shadow latency p99 %v µs", p99)
	}
}

// BenchmarkFold: comparisons folded into windows per second on one core (target ≥ 200,000).
//
//	cd services/aggregator && go test -run '^$' -bench Fold -cpu 1 ./window
func BenchmarkFold(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	cs := make([]schemas.Comparison, 4096)
	for i := range cs {
		cs[i] = cmp(fmt.Sprint(i), t0.Add(time.Duration(r.IntN(600))*time.Second), r.Float64(), r.Float64(), "")
	}
	ws := map[Key]*Window{}
	b.ResetTimer()
	for i := range b.N {
		Fold(ws, cs[i%len(cs)], time.Minute)
	}
}
