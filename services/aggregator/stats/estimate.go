package stats

import (
	"github.com/understudy-ml/understudy/schemas/apiv1"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Methods say how an Estimate's interval was made (apiv1's).
const (
	MethodMeanCS     = apiv1.MethodMeanCS
	MethodQuantileCS = apiv1.MethodQuantileCS
	MethodThreshold  = apiv1.MethodThreshold
)

// Estimate is a metric's value with an interval that holds at every look (apiv1.Estimate).
type Estimate = apiv1.Estimate

// Sequential reports whether m's rules decide on an interval valid at every look.
func Sequential(m Metric) bool {
	switch m {
	case MetricPSI, MetricKS, MetricChiSquareP:
		return false
	}
	return true
}

func (s Stats) latencyMoments() window.Moments {
	if s.w == nil {
		return window.Moments{}
	}
	if s.ref != nil {
		return s.w.LatencyVsBaseline
	}
	return s.w.LatencyVsChampion
}

// Estimate returns metric m of s with its interval at level alpha; ok is false when it cannot
// be computed. Statistics decoded from JSON (without their window) give threshold-only
// estimates.
func (s Stats) Estimate(m Metric, alpha float64) (Estimate, bool) {
	value, n, ok := s.Value(m)
	if !ok {
		return Estimate{N: n}, false
	}
	point := Estimate{Value: value, Low: value, High: value, N: n, Method: MethodThreshold}
	if !Sequential(m) || s.w == nil {
		return point, true
	}
	w := s.w
	var (
		v  float64
		iv Interval
	)
	switch m {
	case MetricAccuracyDiff:
		p := w.Paired
		v, iv, ok = PairedCS(p.ShadowOnly, p.ChampionOnly, p.Decided, alpha)
	case MetricMAEDiff:
		p := w.Paired
		v, iv, ok = MeanCS(window.Moments{N: p.Scored, Sum: p.AbsDiff, SumSq: p.AbsDiffSq}, alpha)
	case MetricErrorRateDiff:
		e := w.Errors
		v, iv, ok = PairedCS(e.ShadowOnly, e.ChampionOnly, e.N, alpha)
	case MetricDisagreement:
		v, iv, ok = ProportionCS(w.Compared-w.Agree, w.Compared, alpha)
	case MetricCoverage:
		v, iv, ok = ProportionCS(w.Statuses[schemas.StatusComplete], w.Total, alpha)
	case MetricShadowMissing:
		v, iv, ok = ProportionCS(w.Statuses[schemas.StatusShadowMissing], w.Total, alpha)
	case MetricLatencyMean:
		v, iv, ok = MeanCS(s.latencyMoments(), alpha)
	case MetricLatencyP50, MetricLatencyP95, MetricLatencyP99:
		q := map[Metric]float64{MetricLatencyP50: 0.5, MetricLatencyP95: 0.95, MetricLatencyP99: 0.99}[m]
		ref := w.Champion.Latency
		if s.ref != nil {
			ref = s.ref.Shadow.Latency
		}
		a, ia, oka := QuantileCS(w.Shadow.Latency, q, alpha/2)
		b, ib, okb := QuantileCS(ref, q, alpha/2)
		if !oka || !okb || b <= 0 {
			return Estimate{N: n}, false
		}
		_, iv = RatioCS(a, b, ia, ib)
		return Estimate{Value: value, Low: iv.Low, High: iv.High, Alpha: alpha, N: n, Method: MethodQuantileCS}, true
	default:
		return point, true
	}
	if !ok {
		return Estimate{N: n}, false
	}
	return Estimate{Value: v, Low: iv.Low, High: iv.High, Alpha: alpha, N: n, Method: MethodMeanCS}, true
}

// Applicable reports whether metric m can ever be computed for these predictions: false for
// KS over class predictions, the chi-square p-value over numbers, and the label difference
// (accuracy or MAE) the labels do not give. Unknown yet (no predictions or labels) counts as
// applicable.
func (s Stats) Applicable(m Metric) bool {
	switch m {
	case MetricKS:
		return s.Predictions.Kind != "class"
	case MetricChiSquareP:
		return s.Predictions.Kind != "number"
	case MetricAccuracyDiff, MetricMAEDiff:
		d := s.Labels.Difference
		return d == nil || string(m) == d.Metric+"_diff"
	}
	return true
}
