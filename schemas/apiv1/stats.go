package apiv1

import (
	"encoding/json"
	"math"
	"strconv"
)

// Quantiles are latency quantiles in milliseconds (or, for Ratio, unitless).
type Quantiles struct {
	P50 *float64 `json:"p50"`
	P95 *float64 `json:"p95"`
	P99 *float64 `json:"p99"`
}

// Latency compares the two sides' latencies. Ratio is shadow ÷ Reference per quantile:
// Reference is "champion" (timed inline at the tap, which is what production sees, but not
// measured the way shadows are) or "noise_baseline:<shadow>" when the experiment has a copy of
// the champion as a shadow, timed by the invoker exactly like this shadow; LikeForLike says
// which. The champion's own quantiles stay reported either way.
type Latency struct {
	Champion    Quantiles `json:"champion_ms"`
	Shadow      Quantiles `json:"shadow_ms"`
	Ratio       Quantiles `json:"ratio"`
	Reference   string    `json:"reference"`
	LikeForLike bool      `json:"like_for_like"`
}

// Errors are one side's failures: the rate over the requests the side answered or failed
// (shadow calls deliberately not made, schemas.NotCalled, excluded) and the counts by kind.
type Errors struct {
	Rate   *float64          `json:"rate"`
	ByKind map[string]uint64 `json:"by_kind"`
}

// Predictions compares the two prediction distributions and the per-request agreement. Kind
// is "number", "class" or "" (nothing comparable yet). For numbers: PSI over bins from the
// champion's quantiles, KS, and quantiles of shadow − champion. For classes: PSI over classes
// and the chi-square test of homogeneity.
type Predictions struct {
	Kind      string    `json:"kind"`
	PSI       *float64  `json:"psi"`
	KS        *float64  `json:"ks,omitempty"`
	ChiSquare *float64  `json:"chi_square,omitempty"`
	ChiDF     int       `json:"chi_square_df,omitempty"`
	ChiP      *float64  `json:"chi_square_p,omitempty"`
	Diff      Quantiles `json:"diff_quantiles"` // unitless here despite the type's name
	Champion  uint64    `json:"champion_n"`
	Shadow    uint64    `json:"shadow_n"`
	// Numeric predictions rejected as NaN or ±Inf, by side: counted, never folded.
	ChampionNonFinite uint64   `json:"champion_non_finite"`
	ShadowNonFinite   uint64   `json:"shadow_non_finite"`
	Compared          uint64   `json:"compared"`
	Agreement         *float64 `json:"agreement"`
}

// LabelMetrics are one side's metrics against labels.
type LabelMetrics struct {
	Accuracy *float64 `json:"accuracy"`
	MAE      *float64 `json:"mae"`
	RMSE     *float64 `json:"rmse"`
	LogLoss  *float64 `json:"log_loss"`
	Brier    *float64 `json:"brier"`
}

// Difference is shadow − champion for one label metric with a confidence interval from the
// paired requests (both sides on the same labeled requests).
type Difference struct {
	Metric string   `json:"metric"` // accuracy or mae
	Value  *float64 `json:"value"`
	Low    *float64 `json:"ci_low"`
	High   *float64 `json:"ci_high"`
	N      uint64   `json:"n"`
}

// Labels are label metrics for both sides. Shown is false (and metrics null) below the
// minimum number of labeled requests.
type Labels struct {
	N          uint64       `json:"n"`
	Shown      bool         `json:"shown"`
	MinLabels  uint64       `json:"min_labels"`
	Champion   LabelMetrics `json:"champion"`
	Shadow     LabelMetrics `json:"shadow"`
	Difference *Difference  `json:"difference"`
}

// PairedErrors count both sides' failures on the same requests: of N requests both sides
// answered or failed, Both failed on both, ChampionOnly and ShadowOnly on one.
type PairedErrors struct {
	N            uint64 `json:"n"`
	Both         uint64 `json:"both"`
	ChampionOnly uint64 `json:"champion_only"`
	ShadowOnly   uint64 `json:"shadow_only"`
}

// Stats are the statistics of one champion-vs-shadow window or range.
type Stats struct {
	Total       uint64            `json:"requests"`
	Statuses    map[string]uint64 `json:"statuses"`     // comparisons by joiner status
	NotShadowed map[string]uint64 `json:"not_shadowed"` // requests not compared, by reason
	Coverage    *float64          `json:"coverage"`     // complete ÷ requests
	Latency     Latency           `json:"latency"`
	Champion    Errors            `json:"champion_errors"`
	Shadow      Errors            `json:"shadow_errors"`
	ErrorDiff   *float64          `json:"error_rate_diff"` // shadow − champion
	Predictions Predictions       `json:"predictions"`
	Labels      Labels            `json:"labels"`
	// PairedErrors are both sides' failures on the same requests.
	PairedErrors PairedErrors `json:"paired_errors"`
	// Dispatch counts the shadow's calls by how they left the invoker (paced, late,
	// catch_up, off); Paced is the paced share of those counted (nil when none are).
	Dispatch map[string]uint64 `json:"dispatch"`
	Paced    *float64          `json:"paced"`
	// Versions counts each side's answers by model version: a range whose shadow side
	// names more than one version mixes them (Mixed).
	Versions Versions `json:"versions"`
}

// Versions are the model versions behind a window's or range's answers, with their counts
// ("" when the producer named none; "(other)" beyond the eight a window tells apart).
type Versions struct {
	Champion map[string]uint64 `json:"champion"`
	Shadow   map[string]uint64 `json:"shadow"`
}

// Mixed reports whether the shadow's answers come from more than one model version.
func (v Versions) Mixed() bool { return len(v.Shadow) > 1 }

// ShadowReport is one shadow's statistics against the champion, with the noise-baseline
// shadow's statistics over the same range as its noise floor (nil when the experiment has no
// baseline, or for the baseline itself).
type ShadowReport struct {
	Shadow     string `json:"shadow"`
	Role       string `json:"role"`
	Stats      Stats  `json:"stats"`
	NoiseFloor *Stats `json:"noise_floor"`
	Baseline   string `json:"noise_baseline,omitempty"`
}

// Metric names a statistic an alert rule can watch (docs/aggregator.md lists them).
type Metric string

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
// the samples it rests on and the method. In JSON, infinite bounds (an interval open on one
// side) are null.
type Estimate struct {
	Value  float64
	Low    float64
	High   float64
	Alpha  float64
	N      uint64
	Method string
}

// MarshalJSON writes infinite bounds as null.
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

// Finite returns &x, or nil for NaN and ±Inf (which JSON cannot carry).
func Finite(x float64) *float64 {
	if math.IsInf(x, 0) || math.IsNaN(x) {
		return nil
	}
	return &x
}

// FormatNumber writes an estimate or bound as Reason texts and the CLI do: 4 significant
// digits, ±∞ as symbols.
func FormatNumber(x float64) string {
	switch {
	case math.IsInf(x, 1):
		return "+∞"
	case math.IsInf(x, -1):
		return "−∞"
	}
	return strconv.FormatFloat(x, 'g', 4, 64)
}
