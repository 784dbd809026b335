package stats

import (
	"math"

	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Confidence sequences: intervals that hold at every look at once, so a rule may be checked
// every minute for weeks without its error rate growing with the number of looks.
//
// Means (paired per-request differences, proportions) use the asymptotic confidence sequence
// with the normal-mixture (conjugate-mixture) boundary of Waudby-Smith, Arnold, Wu, Ramdas and
// Howard, "Time-uniform central limit theory and asymptotic confidence sequences" (Annals of
// Statistics, 2024; arXiv:2103.06476), Theorem 2.2; the same construction GrowthBook and Eppo
// use for sequential testing:
//
//	mean ± σ̂ · sqrt( 2(tρ²+1) / (t²ρ²) · ln( sqrt(tρ²+1) / α ) )
//
// with ρ² tuned to be tightest at TuneAt samples (their approximation
// ρ² = (−2 ln α + ln(−2 ln α + 1)) / t*). Quantiles use the order-statistic confidence
// sequence of Howard and Ramdas, "Sequential estimation of quantiles with applications to A/B
// testing and best-arm identification" (Bernoulli, 2022), Theorem 1: the number of samples
// below the true q-quantile is a Binomial(t, q) sum, so a time-uniform bound f_t on its
// deviation brackets the quantile between the empirical quantiles at q ∓ f_t/t; f_t is the
// boundary above with σ² = q(1 − q).

// TuneAt is the sample size at which the confidence sequences are tightest. Widths grow only
// like sqrt(log t) away from it.
const TuneAt = 10000

// Interval is a two-sided interval, valid at every look with probability 1 − Alpha. Low or
// High is ±Inf when the data bound it on one side only.
type Interval struct {
	Low   float64
	High  float64
	Alpha float64
}

// csMargin is the half-width of the mean's confidence sequence after t samples of standard
// deviation sigma, at level alpha.
func csMargin(t, sigma, alpha float64) float64 {
	if t < 1 {
		return math.Inf(1)
	}
	l := -2 * math.Log(alpha)
	rho2 := (l + math.Log(l+1)) / TuneAt
	return sigma * math.Sqrt(2*(t*rho2+1)/(t*t*rho2)*math.Log(math.Sqrt(t*rho2+1)/alpha))
}

// MeanCS is the confidence sequence for the mean of i.i.d. values from their moments.
func MeanCS(m window.Moments, alpha float64) (mean float64, iv Interval, ok bool) {
	if m.N < 2 {
		return 0, Interval{}, false
	}
	n := float64(m.N)
	mean = m.Sum / n
	v := max(0, (m.SumSq-n*mean*mean)/(n-1))
	h := csMargin(n, math.Sqrt(v), alpha)
	return mean, Interval{mean - h, mean + h, alpha}, true
}

// ProportionCS is the confidence sequence for a proportion of k successes in n trials. The
// standard deviation is floored at that of one success in n, so that a proportion of exactly 0
// or 1 (an identical copy's disagreement) still gets an interval of honest width.
func ProportionCS(k, n uint64, alpha float64) (p float64, iv Interval, ok bool) {
	if n < 2 {
		return 0, Interval{}, false
	}
	nf := float64(n)
	p = float64(k) / nf
	floor := 1 / nf
	q := min(max(p, floor), 1-floor)
	h := csMargin(nf, math.Sqrt(q*(1-q)), alpha)
	return p, Interval{max(0, p-h), min(1, p+h), alpha}, true
}

// PairedCS is the confidence sequence for the mean of per-request differences in {−1, 0, 1}:
// up requests where only the shadow counts (+1), down where only the champion does (−1), of n.
func PairedCS(up, down, n uint64, alpha float64) (d float64, iv Interval, ok bool) {
	return MeanCS(window.Moments{N: n, Sum: float64(up) - float64(down), SumSq: float64(up + down)}, alpha)
}

// QuantileCS brackets the q-quantile of the distribution d was drawn from.
func QuantileCS(d *sketch.Digest, q, alpha float64) (est float64, iv Interval, ok bool) {
	n := d.Count()
	if n < 2 {
		return 0, Interval{}, false
	}
	f := csMargin(float64(n), math.Sqrt(q*(1-q)), alpha)
	est = d.Quantile(q)
	iv = Interval{math.Inf(-1), math.Inf(1), alpha}
	if q-f > 0 {
		iv.Low = d.Quantile(q - f)
	}
	if q+f < 1 {
		iv.High = d.Quantile(q + f)
	}
	return est, iv, true
}

// RatioCS brackets a/b for two independent positive quantities given their intervals (each at
// half the level, so the pair holds at the sum).
func RatioCS(a, b float64, ia, ib Interval) (float64, Interval) {
	r := a / b
	iv := Interval{Low: 0, High: math.Inf(1), Alpha: ia.Alpha + ib.Alpha}
	if ib.High > 0 && !math.IsInf(ib.High, 1) && ia.Low > 0 {
		iv.Low = ia.Low / ib.High
	}
	if ib.Low > 0 && !math.IsInf(ia.High, 1) {
		iv.High = ia.High / ib.Low
	}
	return r, iv
}
