// Package exact computes the aggregator's statistics exactly from raw samples: the reference
// the sketch-based statistics are tested against. It is for tests and benchmarks only.
package exact

import (
	"math"
	"sort"
)

// CDF returns the empirical CDF of sorted samples: the fraction at or below x.
func CDF(sorted []float64) func(float64) float64 {
	return func(x float64) float64 {
		return float64(sort.Search(len(sorted), func(i int) bool { return sorted[i] > x })) / float64(len(sorted))
	}
}

// Quantile is the lower empirical quantile of sorted samples.
func Quantile(sorted []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Rank returns the fraction of sorted samples below x, the rank a reported quantile has.
func Rank(sorted []float64, x float64) float64 {
	return float64(sort.SearchFloat64s(sorted, x)) / float64(len(sorted))
}

// PSI is the population stability index of sorted cur against sorted ref over bins bins with
// edges at ref's quantiles, shares floored at eps (sketch.PSIEpsilon gives the definition
// sketch.PSI estimates; it is a parameter so that package sketch's own tests can use this).
func PSI(ref, cur []float64, bins int, eps float64) float64 {
	fr, fc := CDF(ref), CDF(cur)
	psi, prevR, prevC := 0.0, 0.0, 0.0
	for i := 1; i <= bins; i++ {
		r, c := 1.0, 1.0
		if i < bins {
			e := Quantile(ref, float64(i)/float64(bins))
			r, c = fr(e), fc(e)
		}
		a, b := max(r-prevR, eps), max(c-prevC, eps)
		psi += (b - a) * math.Log(b/a)
		prevR, prevC = r, c
	}
	return psi
}

// KS is the two-sample Kolmogorov-Smirnov statistic of sorted samples.
func KS(a, b []float64) float64 {
	fa, fb := CDF(a), CDF(b)
	ks := 0.0
	for _, x := range append(append([]float64(nil), a...), b...) {
		ks = max(ks, math.Abs(fa(x)-fb(x)))
	}
	return ks
}
