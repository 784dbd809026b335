package window

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
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
	Fold(ws, cmp("a", t0, 0.9, 0.8, ""), time.Minute, nil, Compare{})                     // agree
	Fold(ws, cmp("b", t0.Add(10*time.Second), 0.2, 0.7, ""), time.Minute, nil, Compare{}) // disagree
	Fold(ws, cmp("c", t0.Add(20*time.Second), 0.4, 0, "timeout"), time.Minute, nil, Compare{})
	Fold(ws, cmp("d", t0.Add(90*time.Second), 0.1, 0.1, ""), time.Minute, nil, Compare{}) // next window
	nan := cmp("e", t0, 0.5, math.NaN(), "")
	Fold(ws, nan, time.Minute, nil, Compare{})
	labeled := cmp("a", t0, 0.9, 0.8, "")
	labeled.Label = &schemas.LabelValue{Value: schemas.Number(1)}
	Fold(ws, labeled, time.Minute, nil, Compare{})

	w := ws[Key{Experiment: "e", Shadow: "v7", Start: t0}]
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
	// Class labels: accuracy counts (the scores above counted too: 0.9 and 0.8 against 1 are right).
	c := schemas.Comparison{
		Experiment: "e", EventTime: t0, Label: &schemas.LabelValue{Value: schemas.Label("fraud")},
		Champion: &schemas.Outcome{Prediction: schemas.Label("fraud")}, Shadows: []schemas.Outcome{{Name: "v7", Prediction: schemas.Label("ok")}},
	}
	Fold(ws, c, time.Minute, nil, Compare{})
	if w.Champion.Labels.Correct != 2 || w.Shadow.Labels.Correct != 1 || w.Shadow.Labels.N != 2 || w.Shadow.Labels.Decided != 2 {
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
		Fold(all, c, time.Minute, nil, Compare{})
		Fold(parts[i%3], c, time.Minute, nil, Compare{})
	}
	merged := New()
	for _, p := range parts {
		b, err := json.Marshal(p[Key{Experiment: "e", Shadow: "v7", Start: t0}])
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
	want := all[Key{Experiment: "e", Shadow: "v7", Start: t0}]
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
		Fold(ws, cs[i%len(cs)], time.Minute, nil, Compare{})
	}
}

// BenchmarkFoldWithExamples is BenchmarkFold with the aggregator's example picking (5 per
// window and kind, a new picker per 5,000-comparison batch) and 300-byte bodies; run both
// side by side for the ratio.
//
//	cd services/aggregator && go test -run '^$' -bench Fold -cpu 1 ./window
func BenchmarkFoldWithExamples(b *testing.B) {
	benchFoldWithExamples(b, 0, nil)
}

// benchFoldWithExamples folds 4,096 comparisons with 300-byte bodies and keys random segment
// values of 20 each, picking examples as the aggregator does, into windows (and seg's).
func benchFoldWithExamples(b *testing.B, keys int, seg *Segmenter) {
	r := rand.New(rand.NewPCG(3, 4))
	cs := make([]schemas.Comparison, 4096)
	body := []byte(strings.Repeat("x", 300))
	for i := range cs {
		cs[i] = cmp(fmt.Sprint(i), t0.Add(time.Duration(r.IntN(600))*time.Second), r.Float64(), r.Float64(), "")
		cs[i].RequestBody, cs[i].Champion.Body, cs[i].Shadows[0].Body = body, body, body
		for k := range keys {
			cs[i].Segments = append(cs[i].Segments, schemas.SegmentValue{Key: fmt.Sprint("k", k), Value: fmt.Sprint("value-", r.IntN(20))})
		}
	}
	ws := map[Key]*Window{}
	p := NewPicker(5, time.Minute)
	b.ResetTimer()
	for i := range b.N {
		if i%5000 == 0 {
			_ = p.Examples()
			p = NewPicker(5, time.Minute)
		}
		c := cs[i%len(cs)]
		FoldSegments(ws, c, time.Minute, nil, Compare{}, seg)
		p.Add(c, Compare{})
	}
}

// TestFoldPerShadowCoverage: each shadow's window counts the request with that shadow's own
// status; an expected shadow that never answered counts as shadow_missing; deliberate skips
// count as coverage, not errors; labeled comparisons fill the paired counts.
func TestFoldPerShadowCoverage(t *testing.T) {
	ws := map[Key]*Window{}
	expected := []string{"v7", "copy"}
	Fold(ws, cmp("a", t0, 0.9, 0.8, ""), time.Minute, expected, Compare{})             // copy missing
	Fold(ws, cmp("b", t0, 0.2, 0.7, "rate_limited"), time.Minute, expected, Compare{}) // v7 not shadowed, copy missing
	none := schemas.Comparison{
		RequestID: "c", Experiment: "other", EventTime: t0, Status: schemas.StatusShadowMissing,
		Champion: &schemas.Outcome{Prediction: schemas.Number(1)},
	}
	Fold(ws, none, time.Minute, nil, Compare{})

	v7, cp, other := ws[Key{Experiment: "e", Shadow: "v7", Start: t0}], ws[Key{Experiment: "e", Shadow: "copy", Start: t0}], ws[Key{Experiment: "other", Shadow: "", Start: t0}]
	if v7 == nil || cp == nil || other == nil || len(ws) != 3 {
		t.Fatalf("windows %v", ws)
	}
	if v7.Total != 2 || v7.Statuses[schemas.StatusComplete] != 1 || v7.Statuses[schemas.StatusShadowError] != 1 ||
		v7.NotShadowed["rate_limited"] != 1 || len(v7.Shadow.Errors) != 0 || v7.Shadow.Latency.Count() != 1 {
		t.Fatalf("v7 %+v", v7)
	}
	if cp.Total != 2 || cp.Statuses[schemas.StatusShadowMissing] != 2 || cp.Shadow.Latency.Count() != 0 || cp.Champion.Latency.Count() != 2 {
		t.Fatalf("copy %+v", cp)
	}
	if other.Total != 1 || other.Statuses[schemas.StatusShadowMissing] != 1 {
		t.Fatalf("other %+v", other)
	}

	// Paired label counts: champion right and shadow wrong, then both right.
	lab := func(champ, shadow string) schemas.Comparison {
		return schemas.Comparison{
			Experiment: "e", EventTime: t0, Label: &schemas.LabelValue{Value: schemas.Label("fraud")},
			Champion: &schemas.Outcome{Prediction: schemas.Label(champ)}, Shadows: []schemas.Outcome{{Name: "v7", Prediction: schemas.Label(shadow)}},
		}
	}
	Fold(ws, lab("fraud", "ok"), time.Minute, nil, Compare{})
	Fold(ws, lab("fraud", "fraud"), time.Minute, nil, Compare{})
	Fold(ws, lab("ok", "fraud"), time.Minute, nil, Compare{})
	if p := v7.Paired; p.N != 3 || p.Decided != 3 || p.ChampionOnly != 1 || p.ShadowOnly != 1 || v7.Total != 2 {
		t.Fatalf("paired %+v total %d", p, v7.Total)
	}
}

// TestIntegerClassesAgainstNumericLabels: an INT64 classifier (classes as labels "0".."2")
// scored against ground truth sent as numbers: agreement and accuracy are exact counts, not
// scores read at 0.5.
func TestIntegerClassesAgainstNumericLabels(t *testing.T) {
	ws := map[Key]*Window{}
	r := rand.New(rand.NewPCG(1, 2))
	var agree, champRight, shadowRight int
	const n = 300
	for i := range n {
		truth := r.IntN(3)
		champ, shadow := truth, truth
		if r.IntN(10) < 2 {
			champ = (truth + 1) % 3
		}
		if r.IntN(10) < 3 {
			shadow = (truth + 2) % 3
		}
		if champ == shadow {
			agree++
		}
		if champ == truth {
			champRight++
		}
		if shadow == truth {
			shadowRight++
		}
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "e", EventTime: t0, Status: schemas.StatusComplete,
			Champion: &schemas.Outcome{Prediction: schemas.Label(fmt.Sprint(champ))},
			Shadows:  []schemas.Outcome{{Name: "v7", Prediction: schemas.Label(fmt.Sprint(shadow))}},
		}
		Fold(ws, c, time.Minute, nil, Compare{})
		c.Label = &schemas.LabelValue{Value: schemas.Number(float64(truth))}
		Fold(ws, c, time.Minute, nil, Compare{})
	}
	w := ws[Key{Experiment: "e", Shadow: "v7", Start: t0}]
	if w.Compared != n || w.Agree != uint64(agree) {
		t.Errorf("agreement %d/%d, want %d/%d", w.Agree, w.Compared, agree, n)
	}
	if w.Champion.Labels.Correct != uint64(champRight) || w.Shadow.Labels.Correct != uint64(shadowRight) || w.Shadow.Labels.Decided != n {
		t.Errorf("correct champion %d (want %d), shadow %d (want %d), decided %d", w.Champion.Labels.Correct, champRight, w.Shadow.Labels.Correct, shadowRight, w.Shadow.Labels.Decided)
	}
}

func TestDispatchCountsSurviveMergeAndJSON(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ws := map[Key]*Window{}
	for i, d := range []string{schemas.DispatchPaced, schemas.DispatchPaced, schemas.DispatchCatchUp, ""} {
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "e", EventTime: at, Champion: &schemas.Outcome{Name: "c"},
			Shadows: []schemas.Outcome{{Name: "s", Dispatch: d}},
		}
		Fold(ws, c, time.Minute, nil, Compare{})
	}
	w := ws[Key{Experiment: "e", Shadow: "s", Start: at}]
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var back Window
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Merge(w); err != nil {
		t.Fatal(err)
	}
	if back.Dispatch[schemas.DispatchPaced] != 4 || back.Dispatch[schemas.DispatchCatchUp] != 2 || len(back.Dispatch) != 2 {
		t.Fatalf("dispatch after JSON and merge: %v", back.Dispatch)
	}
}

// TestVersionsAreCountedAndBounded: each side's answers are counted by model version through
// JSON and merges; versions beyond MaxVersions are counted together, never dropped.
func TestVersionsAreCountedAndBounded(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ws := map[Key]*Window{}
	for i := range 12 {
		c := cmp(fmt.Sprint(i), at, 1, 1, "")
		c.Champion.Version = "6"
		c.Shadows[0].Version = fmt.Sprintf("v%02d", i%10) // ten versions, two of them twice
		Fold(ws, c, time.Minute, nil, Compare{})
	}
	w := ws[Key{Experiment: "e", Shadow: "v7", Start: at}]
	b, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	var back Window
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Merge(w); err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, n := range back.Shadow.Versions {
		total += n
	}
	if back.Champion.Versions["6"] != 24 || total != 24 || len(back.Shadow.Versions) != MaxVersions+1 || back.Shadow.Versions[OtherVersions] != 4 || back.Shadow.Versions["v00"] != 4 {
		t.Fatalf("versions after JSON and merge: champion %v, shadow %v", back.Champion.Versions, back.Shadow.Versions)
	}
}
