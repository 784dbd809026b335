package stats

import (
	"encoding/json"
	"math"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Methods say how an Estimate's interval was made.
const (
	// MethodMeanCS: asymptotic confidence sequence on a mean of per-request values
	// (paired differences or proportions); valid at every look.
	MethodMeanCS = "confidence_sequence"
	// MethodQuantileCS: order-statistic confidence sequences on both quantiles, combined into
	// an interval on their ratio; valid at every look.
	MethodQuantileCS = "quantile_confidence_sequence"
	// MethodThreshold: no interval valid under continuous looking is known for this metric
	// (PSI, KS, a p-value); its rules decide on the point estimate held for `for:`
	// consecutive evaluations and beyond the noise floor.
	MethodThreshold = "threshold_only"
)

// Estimate is a metric's value with an interval that holds at every look (level 1 − Alpha),
// the samples it rests on and the method.
type Estimate struct {
	Value  float64
	Low    float64
	High   float64
	Alpha  float64
	N      uint64
	Method string
}

// MarshalJSON writes infinite bounds (an interval open on one side) as null.
func (e Estimate) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Value  *float64 `json:"value"`
		Low    *float64 `json:"low"`
		High   *float64 `json:"high"`
		Alpha  float64  `json:"alpha"`
		N      uint64   `json:"samples"`
		Method string   `json:"method"`
	}{Finite(e.Value), Finite(e.Low), Finite(e.High), e.Alpha, e.N, e.Method})
}

// UnmarshalJSON reads what MarshalJSON wrote (null bounds as ±Inf).
func (e *Estimate) UnmarshalJSON(b []byte) error {
	var v struct {
		Value, Low, High *float64
		Alpha            float64
		N                uint64 `json:"samples"`
		Method           string
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*e = Estimate{Low: math.Inf(-1), High: math.Inf(1), Alpha: v.Alpha, N: v.N, Method: v.Method}
	if v.Value != nil {
		e.Value = *v.Value
	}
	if v.Low != nil {
		e.Low = *v.Low
	}
	if v.High != nil {
		e.High = *v.High
	}
	return nil
}

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

// Finite is x, or nil when x is ±Inf or NaN (an interval open on that side, for JSON and SQL).
func Finite(x float64) *float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return nil
	}
	return &x
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
