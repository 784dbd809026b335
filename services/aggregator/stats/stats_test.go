package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/exact"
	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

var t0 = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

// raw keeps what was folded, to compute every statistic exactly.
type raw struct {
	champLat, shadowLat   []float64 // ms
	champPred, shadowPred []float64
	champErr, shadowErr   int
	agree, compared       int
	// per labeled request: correctness and absolute errors
	cRight, sRight []bool // both sides decidable
	cDecided       []bool // the champion decidable
	cAbs, sAbs     []float64
	cSq, sSq       []float64
}

func within(t *testing.T, name string, got *float64, want, tol float64) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: null, want %.6f", name, want)
	}
	if math.Abs(*got-want) > tol {
		t.Fatalf("%s: %.6f, want %.6f ± %g", name, *got, want, tol)
	}
}

func rankWithin(t *testing.T, name string, sorted []float64, got *float64, q float64) {
	t.Helper()
	if got == nil {
		t.Fatalf("%s: null", name)
	}
	lo, hi := exact.Rank(sorted, *got), exact.CDF(sorted)(*got)
	if q < lo-0.01 || q > hi+0.01 {
		t.Fatalf("%s: %.4f has rank %.4f..%.4f, want %.2f ± 0.01", name, *got, lo, hi, q)
	}
}

// TestNumericStatisticsMatchExact folds 20,000 comparisons per distribution (normal,
// lognormal, bimodal, heavy ties) and checks every statistic against its exact value from the
// raw samples: latency quantiles within 1 % rank, PSI and KS within 0.005, error rates,
// agreement and label metrics exactly, and the paired confidence interval of the difference.
func TestNumericStatisticsMatchExact(t *testing.T) {
	dists := map[string][2]func(*rand.Rand) float64{
		"normal":    {func(r *rand.Rand) float64 { return 0.5 + 0.1*r.NormFloat64() }, func(r *rand.Rand) float64 { return 0.53 + 0.11*r.NormFloat64() }},
		"lognormal": {func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64()) }, func(r *rand.Rand) float64 { return math.Exp(0.2 + r.NormFloat64()) }},
		"bimodal": {func(r *rand.Rand) float64 { return float64(r.IntN(2))*6 + r.NormFloat64() }, func(r *rand.Rand) float64 {
			if r.IntN(10) < 4 {
				return r.NormFloat64()
			}
			return 6 + r.NormFloat64()
		}},
		"heavy ties": {func(r *rand.Rand) float64 { return math.Round(2 * r.ExpFloat64()) }, func(r *rand.Rand) float64 { return math.Round(2.4 * r.ExpFloat64()) }},
	}
	for name, d := range dists {
		t.Run(name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, uint64(len(name))))
			ws := map[window.Key]*window.Window{}
			var x raw
			for i := range 20000 {
				cl := 1 + r.ExpFloat64()*4
				sl := 1.3 + r.ExpFloat64()*5
				cp, sp := d[0](r), d[1](r)
				c := schemas.Comparison{
					RequestID: fmt.Sprint(i), Experiment: "e", EventTime: t0, Status: schemas.StatusComplete,
					Champion: &schemas.Outcome{Prediction: schemas.Number(cp), Latency: time.Duration(cl * float64(time.Millisecond))},
					Shadows:  []schemas.Outcome{{Name: "v7", Prediction: schemas.Number(sp), Latency: time.Duration(sl * float64(time.Millisecond))}},
				}
				switch i % 40 {
				case 0:
					c.Status, c.Shadows[0].Error, c.Shadows[0].Prediction = schemas.StatusShadowError, &schemas.Error{Kind: "timeout"}, schemas.Prediction{}
					x.shadowErr++
				case 1:
					c.Champion.Error = &schemas.Error{Kind: "http_status"}
					x.champErr++
				}
				window.Fold(ws, c, time.Minute, nil, window.Compare{})
				x.champLat = append(x.champLat, float64(c.Champion.Latency.Microseconds())/1000)
				x.champPred = append(x.champPred, cp)
				x.shadowLat = append(x.shadowLat, float64(c.Shadows[0].Latency.Microseconds())/1000)
				if c.Shadows[0].Error != nil {
					continue
				}
				x.shadowPred = append(x.shadowPred, sp)
				x.compared++
				if (cp >= window.Threshold) == (sp >= window.Threshold) {
					x.agree++
				}
				if i%4 == 0 { // a quarter gets a 0/1 label, with the score as its probability
					label := 0.0
					if r.Float64() < min(1, max(0, cp)) {
						label = 1
					}
					lc := c
					lc.Label = &schemas.LabelValue{Value: schemas.Number(label)}
					window.Fold(ws, lc, time.Minute, nil, window.Compare{})
					x.cAbs, x.sAbs = append(x.cAbs, math.Abs(cp-label)), append(x.sAbs, math.Abs(sp-label))
					x.cSq, x.sSq = append(x.cSq, (cp-label)*(cp-label)), append(x.sSq, (sp-label)*(sp-label))
					if cp >= 0 && cp <= 1 {
						x.cDecided = append(x.cDecided, (cp >= 0.5) == (label == 1))
					}
					if cp >= 0 && cp <= 1 && sp >= 0 && sp <= 1 {
						x.cRight, x.sRight = append(x.cRight, (cp >= 0.5) == (label == 1)), append(x.sRight, (sp >= 0.5) == (label == 1))
					}
				}
			}
			st := Compute(ws[window.Key{Experiment: "e", Shadow: "v7", Start: t0}], DefaultOptions())
			for _, s := range [][]float64{x.champLat, x.shadowLat, x.champPred, x.shadowPred} {
				sort.Float64s(s)
			}
			rankWithin(t, "champion p50", x.champLat, st.Latency.Champion.P50, 0.5)
			rankWithin(t, "champion p95", x.champLat, st.Latency.Champion.P95, 0.95)
			rankWithin(t, "champion p99", x.champLat, st.Latency.Champion.P99, 0.99)
			rankWithin(t, "shadow p99", x.shadowLat, st.Latency.Shadow.P99, 0.99)
			within(t, "p99 ratio", st.Latency.Ratio.P99, *st.Latency.Shadow.P99 / *st.Latency.Champion.P99, 1e-12)
			within(t, "PSI", st.Predictions.PSI, exact.PSI(x.champPred, x.shadowPred, 10, sketch.PSIEpsilon), 0.005)
			within(t, "KS", st.Predictions.KS, exact.KS(x.champPred, x.shadowPred), 0.005)
			within(t, "agreement", st.Predictions.Agreement, float64(x.agree)/float64(x.compared), 1e-12)
			within(t, "champion error rate", st.Champion.Rate, float64(x.champErr)/20000, 1e-12)
			within(t, "shadow error rate", st.Shadow.Rate, float64(x.shadowErr)/20000, 1e-12)
			within(t, "error rate diff", st.ErrorDiff, float64(x.shadowErr-x.champErr)/20000, 1e-12)
			if got := st.Statuses[schemas.StatusShadowError]; got != uint64(x.shadowErr) {
				t.Fatalf("shadow_error %d, want %d", got, x.shadowErr)
			}

			if !st.Labels.Shown {
				t.Fatalf("labels hidden with n=%d", st.Labels.N)
			}
			mean := func(xs []float64) float64 {
				s := 0.0
				for _, v := range xs {
					s += v
				}
				return s / float64(len(xs))
			}
			within(t, "champion MAE", st.Labels.Champion.MAE, mean(x.cAbs), 1e-9)
			within(t, "shadow RMSE", st.Labels.Shadow.RMSE, math.Sqrt(mean(x.sSq)), 1e-9)
			if len(x.cRight) > 0 {
				ds := make([]float64, len(x.cRight))
				for i := range x.cRight {
					b2f := func(b bool) float64 {
						if b {
							return 1
						}
						return 0
					}
					ds[i] = b2f(x.sRight[i]) - b2f(x.cRight[i])
				}
				n := float64(len(ds))
				right := 0.0
				for _, ok := range x.cDecided {
					if ok {
						right++
					}
				}
				within(t, "champion accuracy", st.Labels.Champion.Accuracy, right/float64(len(x.cDecided)), 1e-12)
				d := mean(ds)
				v := 0.0
				for _, di := range ds {
					v += (di - d) * (di - d)
				}
				se := math.Sqrt(v/n) / math.Sqrt(n)
				diff := st.Labels.Difference
				if diff == nil || diff.Metric != "accuracy" {
					t.Fatalf("difference %+v", diff)
				}
				within(t, "accuracy diff", diff.Value, d, 1e-12)
				within(t, "accuracy diff CI low", diff.Low, d-1.96*se, 1e-9)
				within(t, "accuracy diff CI high", diff.High, d+1.96*se, 1e-9)
			}
		})
	}
}

// TestClassesLabelsGateAndNoiseFloor: class predictions give PSI over classes, chi-square and
// agreement; label metrics stay hidden below the minimum; the noise-baseline shadow's stats
// come out as every candidate's noise floor.
func TestClassesLabelsGateAndNoiseFloor(t *testing.T) {
	ws := map[window.Key]*window.Window{}
	classes := []string{"a", "b", "c"}
	champ := map[string]uint64{}
	cand := map[string]uint64{}
	agree := 0
	for i := range 3000 {
		cp := classes[i%3]
		sp := cp
		if i%10 == 0 {
			sp = "c"
		}
		champ[cp]++
		cand[sp]++
		if sp == cp {
			agree++
		}
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "e", EventTime: t0, Status: schemas.StatusComplete,
			Champion: &schemas.Outcome{Prediction: schemas.Label(cp), Latency: time.Millisecond},
			Shadows: []schemas.Outcome{
				{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Label(sp), Latency: time.Millisecond},
				{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Label(cp), Latency: time.Millisecond},
			},
		}
		window.Fold(ws, c, time.Minute, nil, window.Compare{})
		if i < 50 {
			c.Label = &schemas.LabelValue{Value: schemas.Label(cp)}
			window.Fold(ws, c, time.Minute, nil, window.Compare{})
		}
	}
	merged := map[string]*window.Window{}
	for k, w := range ws {
		merged[k.Shadow] = w
	}
	rep := Report(merged, DefaultOptions())
	if len(rep) != 2 || rep[0].Shadow != "cand" || rep[0].NoiseFloor == nil || rep[0].Baseline != "copy" || rep[1].NoiseFloor != nil {
		t.Fatalf("report order/noise floor %+v", rep)
	}
	p := rep[0].Stats.Predictions
	if p.Kind != "class" {
		t.Fatalf("kind %q", p.Kind)
	}
	// Exact PSI over classes and chi-square of the 2×3 table.
	wantPSI, chi := 0.0, 0.0
	n := 3000.0
	for _, k := range classes {
		a, b := float64(champ[k])/n, float64(cand[k])/n
		wantPSI += (b - a) * math.Log(b/a)
		col := float64(champ[k] + cand[k])
		for _, o := range []float64{float64(champ[k]), float64(cand[k])} {
			e := col / 2
			chi += (o - e) * (o - e) / e
		}
	}
	within(t, "class PSI", p.PSI, wantPSI, 1e-12)
	within(t, "chi-square", p.ChiSquare, chi, 1e-9)
	within(t, "agreement", p.Agreement, float64(agree)/3000, 1e-12)
	floor := rep[0].NoiseFloor.Predictions
	within(t, "noise floor PSI", floor.PSI, 0, 1e-12)
	within(t, "noise floor agreement", floor.Agreement, 1, 0)
	if rep[0].Stats.Labels.Shown || rep[0].Stats.Labels.Champion.Accuracy != nil || rep[0].Stats.Labels.N != 50 {
		t.Fatalf("labels shown below the minimum: %+v", rep[0].Stats.Labels)
	}
	if v, n, ok := rep[0].Stats.Value(MetricAccuracyDiff); ok {
		t.Fatalf("accuracy diff %v (n=%d) available below the minimum", v, n)
	}
	o := DefaultOptions()
	o.MinLabels = 10
	st := Compute(merged["cand"], o)
	// 50 labels equal to the champion's class: the candidate is wrong where it said "c" for a
	// or b (i = 0, 10, 20, 30, 40 with i%3 != 2).
	wrong := 0
	for i := 0; i < 50; i += 10 {
		if i%3 != 2 {
			wrong++
		}
	}
	within(t, "candidate accuracy", st.Labels.Shadow.Accuracy, float64(50-wrong)/50, 1e-12)
	if v, n, ok := st.Value(MetricAccuracyDiff); !ok || n != 50 || math.Abs(v+float64(wrong)/50) > 1e-12 {
		t.Fatalf("accuracy diff %v n=%d ok=%v", v, n, ok)
	}
}
