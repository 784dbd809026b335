package sketch

import (
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"github.com/understudy-ml/understudy/services/aggregator/internal/exact"
)

type dist struct {
	name     string
	ref, cur func(*rand.Rand) float64
}

var dists = []dist{
	{"normal", func(r *rand.Rand) float64 { return r.NormFloat64() }, func(r *rand.Rand) float64 { return 0.3 + 1.1*r.NormFloat64() }},
	{"lognormal", func(r *rand.Rand) float64 { return math.Exp(r.NormFloat64()) }, func(r *rand.Rand) float64 { return math.Exp(0.2 + r.NormFloat64()) }},
	{"bimodal", func(r *rand.Rand) float64 {
		if r.IntN(2) == 0 {
			return r.NormFloat64()
		}
		return 6 + r.NormFloat64()
	}, func(r *rand.Rand) float64 {
		if r.IntN(10) < 4 {
			return r.NormFloat64()
		}
		return 6 + r.NormFloat64()
	}},
	{"heavy ties", func(r *rand.Rand) float64 { return math.Round(2 * r.ExpFloat64()) }, func(r *rand.Rand) float64 { return math.Round(2.4 * r.ExpFloat64()) }},
	{"identical", func(r *rand.Rand) float64 { return r.NormFloat64() }, func(r *rand.Rand) float64 { return r.NormFloat64() }},
}

func sample(r *rand.Rand, n int, f func(*rand.Rand) float64) ([]float64, *Digest) {
	xs := make([]float64, n)
	d := New()
	for i := range xs {
		xs[i] = f(r)
		if err := d.Add(xs[i]); err != nil {
			panic(err)
		}
	}
	sort.Float64s(xs)
	return xs, d
}

// TestStatisticsMatchExactValues: PSI and KS from digests are within 0.005 of the values
// computed from the raw samples, and quantiles within 1 % rank error, on several shapes.
func TestStatisticsMatchExactValues(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const n = 100000
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			ref, rd := sample(r, n, d.ref)
			cur, cd := sample(r, n, d.cur)
			psi, want := PSI(rd, cd, 10), exact.PSI(ref, cur, 10, PSIEpsilon)
			if math.Abs(psi-want) > 0.005 {
				t.Errorf("PSI %.5f, exact %.5f", psi, want)
			}
			ks, wantKS := KS(rd, cd), exact.KS(ref, cur)
			if math.Abs(ks-wantKS) > 0.005 {
				t.Errorf("KS %.5f, exact %.5f", ks, wantKS)
			}
			for _, q := range []float64{0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999} {
				// The rank range of v among the samples, with a rounding allowance (at ties the
				// digest may answer 5.999999999999999 for 6).
				v := rd.Quantile(q)
				eps := 1e-9 * max(1, math.Abs(v))
				lo := float64(sort.SearchFloat64s(ref, v-eps)) / n
				hi := float64(sort.Search(len(ref), func(i int) bool { return ref[i] > v+eps })) / n
				if q < lo-0.01 || q > hi+0.01 {
					t.Errorf("quantile %.3f = %g has rank [%.4f, %.4f]", q, v, lo, hi)
				}
			}
			t.Logf("PSI %.4f (exact %.4f), KS %.4f (exact %.4f)", psi, want, ks, wantKS)
		})
	}
}

// TestRoundTripKeepsLargeValues: values near 1e12 survive serialization exactly (go-tdigest's
// own encoding shifts them by tens of thousands).
func TestRoundTripKeepsLargeValues(t *testing.T) {
	d := New()
	for i := range 1000 {
		_ = d.Add(1e12 + float64(i))
	}
	b, err := d.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var back Digest
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.Count() != 1000 {
		t.Fatalf("count %d", back.Count())
	}
	for _, q := range []float64{0, 0.25, 0.5, 0.75, 1} {
		if a, b := d.Quantile(q), back.Quantile(q); math.Abs(a-b) > 1 {
			t.Errorf("quantile %.2f: %f before, %f after a round trip", q, a, b)
		}
	}
	if err := back.UnmarshalBinary(b[:len(b)-1]); err == nil {
		t.Error("truncated encoding accepted")
	}
}

func TestNonFiniteRejected(t *testing.T) {
	d := New()
	for _, x := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if err := d.Add(x); !errors.Is(err, ErrNonFinite) {
			t.Errorf("Add(%v) = %v", x, err)
		}
	}
	if d.Count() != 0 || !math.IsNaN(d.Quantile(0.5)) || !math.IsNaN(PSI(d, d, 10)) {
		t.Error("empty digest statistics should be NaN")
	}
}

func TestMergeEqualsAddingAll(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all, a, b := New(), New(), New()
	for i := range 50000 {
		x := r.NormFloat64()
		_ = all.Add(x)
		if i%2 == 0 {
			_ = a.Add(x)
		} else {
			_ = b.Add(x)
		}
	}
	if err := a.Merge(b); err != nil {
		t.Fatal(err)
	}
	if a.Count() != all.Count() || math.Abs(a.Quantile(0.9)-all.Quantile(0.9)) > 0.02 || KS(a, all) > 0.005 {
		t.Fatalf("merged %d values, p90 %.4f vs %.4f, KS %.4f", a.Count(), a.Quantile(0.9), all.Quantile(0.9), KS(a, all))
	}
}

func TestClassStatistics(t *testing.T) {
	ref := Classes{"fraud": 100, "ok": 900}
	same := Classes{"fraud": 200, "ok": 1800}
	if psi := ClassPSI(ref, same); psi > 1e-12 {
		t.Fatalf("identical shares: PSI %g", psi)
	}
	// Exact: r = (0.1, 0.9), c = (0.2, 0.8): (0.1)ln2 + (-0.1)ln(8/9).
	shifted := Classes{"fraud": 200, "ok": 800}
	want := 0.1*math.Log(2) - 0.1*math.Log(0.8/0.9)
	if psi := ClassPSI(ref, shifted); math.Abs(psi-want) > 1e-12 {
		t.Fatalf("PSI %g, want %g", psi, want)
	}
	// 2×2 table [[100, 900], [200, 800]]: chi-square 39.2157 (by hand), df 1, p ≈ 3.8e-10.
	stat, df, p := ChiSquare(ref, shifted)
	if math.Abs(stat-39.2157) > 1e-3 || df != 1 || p > 1e-9 || p < 1e-10 {
		t.Fatalf("chi-square %.4f df %d p %g", stat, df, p)
	}
	if _, _, p := ChiSquare(ref, same); p < 0.99 {
		t.Fatalf("identical shares: p %g", p)
	}
	// A known value: chi-square 3.841 with 1 df has p = 0.05.
	if p := gammaQ(0.5, 3.841459/2); math.Abs(p-0.05) > 1e-5 {
		t.Fatalf("Q(0.5, 1.92) = %g, want 0.05", p)
	}
	if p := gammaQ(5, 18.307/2); math.Abs(p-0.05) > 1e-4 { // 10 df
		t.Fatalf("Q(5, 9.15) = %g, want 0.05", p)
	}
}

// BenchmarkPSIAndKS: both statistics for one window pair of 10,000 values each (target ≤ 100 µs).
//
//	cd services/aggregator && go test -run '^$' -bench PSIAndKS ./sketch
func BenchmarkPSIAndKS(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	_, ref := sample(r, 10000, dists[0].ref)
	_, cur := sample(r, 10000, dists[0].cur)
	b.ResetTimer()
	for range b.N {
		_, _ = Compare(ref, cur, 10)
	}
}

// BenchmarkAdd: values folded into a digest per second.
func BenchmarkAdd(b *testing.B) {
	d := New()
	r := rand.New(rand.NewPCG(5, 6))
	xs := make([]float64, 4096)
	for i := range xs {
		xs[i] = r.NormFloat64()
	}
	b.ResetTimer()
	for i := range b.N {
		_ = d.Add(xs[i%len(xs)])
	}
}
