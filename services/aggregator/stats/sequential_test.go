package stats_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// TestMeanCSHoldsAtEveryLook: over 200 runs of 20,000 paired differences with mean 0, looked at
// after every 100, the confidence sequence at α = 0.05 excludes 0 at some look in at most 5 %
// of runs, while a fixed 95 % interval looked at the same way excludes it far more often.
func TestMeanCSHoldsAtEveryLook(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	csMiss, fixedMiss := 0, 0
	const runs = 200
	for range runs {
		var m window.Moments
		cs, fixed := false, false
		for i := 1; i <= 20000; i++ {
			m.Add(float64(r.IntN(3) - 1)) // −1, 0, 1 equally likely: a paired difference with mean 0
			if i%100 != 0 {
				continue
			}
			mean, iv, ok := stats.MeanCS(m, 0.05)
			if !ok {
				t.Fatal("no interval")
			}
			if iv.Low > 0 || iv.High < 0 {
				cs = true
			}
			se := math.Sqrt((m.SumSq/float64(m.N) - mean*mean) / float64(m.N))
			if math.Abs(mean) > 1.96*se {
				fixed = true
			}
		}
		if cs {
			csMiss++
		}
		if fixed {
			fixedMiss++
		}
	}
	t.Logf("runs excluding the true mean at some look: confidence sequence %d/%d, fixed 95 %% interval %d/%d", csMiss, runs, fixedMiss, runs)
	if csMiss > runs*5/100 {
		t.Fatalf("confidence sequence missed in %d of %d runs", csMiss, runs)
	}
	if fixedMiss <= csMiss {
		t.Fatalf("a fixed interval under continuous looking should miss more often (%d vs %d)", fixedMiss, csMiss)
	}
}

func TestMeanCSShrinksAndDetects(t *testing.T) {
	var small, large window.Moments
	for i := range 100000 {
		x := 0.0
		if i%50 == 0 {
			x = -1 // mean −0.02
		}
		if i < 1000 {
			small.Add(x)
		}
		large.Add(x)
	}
	_, a, _ := stats.MeanCS(small, 0.05)
	_, b, _ := stats.MeanCS(large, 0.05)
	if b.High-b.Low >= a.High-a.Low {
		t.Fatalf("interval did not shrink: %v then %v", a, b)
	}
	if b.High >= 0 || b.Low > -0.02 || b.High < -0.02 {
		t.Fatalf("interval %v should exclude 0 and contain −0.02", b)
	}
	if _, _, ok := stats.MeanCS(window.Moments{N: 1, Sum: 1, SumSq: 1}, 0.05); ok {
		t.Fatal("an interval from one sample")
	}
}

func TestProportionCSOfZero(t *testing.T) {
	p, iv, ok := stats.ProportionCS(0, 10000, 0.05)
	if !ok || p != 0 || iv.Low != 0 || !(iv.High > 0 && iv.High < 0.01) {
		t.Fatalf("p=%v %+v", p, iv)
	}
}

// TestQuantileCSBracketsTheQuantile: the p99 of an exponential distribution lies inside its
// confidence sequence at every look of most runs.
func TestQuantileCSBracketsTheQuantile(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	truth := -math.Log(0.01) // p99 of Exp(1)
	miss := 0
	for range 40 {
		d := sketch.New()
		missed := false
		for i := 1; i <= 20000; i++ {
			_ = d.Add(r.ExpFloat64())
			if i%1000 == 0 {
				_, iv, ok := stats.QuantileCS(d, 0.99, 0.05)
				if !ok {
					t.Fatal("no interval")
				}
				if truth < iv.Low || truth > iv.High {
					missed = true
				}
			}
		}
		if missed {
			miss++
		}
	}
	if miss > 4 {
		t.Fatalf("true p99 outside the interval in %d of 40 runs", miss)
	}
	if _, _, ok := stats.QuantileCS(sketch.New(), 0.99, 0.05); ok {
		t.Fatal("an interval from an empty digest")
	}
}

func TestRatioCS(t *testing.T) {
	_, iv := stats.RatioCS(12, 10, stats.Interval{Low: 11, High: 13, Alpha: 0.025}, stats.Interval{Low: 9, High: 11, Alpha: 0.025})
	if math.Abs(iv.Low-1) > 1e-9 || math.Abs(iv.High-13.0/9) > 1e-9 || iv.Alpha != 0.05 {
		t.Fatalf("%+v", iv)
	}
	_, iv = stats.RatioCS(12, 10, stats.Interval{Low: 11, High: math.Inf(1)}, stats.Interval{Low: 9, High: 11})
	if !math.IsInf(iv.High, 1) {
		t.Fatalf("open interval closed: %+v", iv)
	}
}
