// Package stats turns a merged comparison window (any time range) into the numbers a
// promotion decision needs: coverage, latency quantiles of both sides and their ratio, error
// rates, prediction drift (PSI and KS for numbers; PSI over classes and chi-square for
// classes), agreement, and label metrics for both sides with the difference and its confidence
// interval. Report puts each candidate next to the noise-baseline shadow (a copy of the
// champion), whose numbers are the noise floor. Values that cannot be computed (no data, or
// fewer labels than the minimum) are null in JSON, never zero.
package stats

import (
	"math"
	"sort"

	"github.com/understudy-ml/understudy/schemas/apiv1"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Options tune the statistics.
type Options struct {
	Bins      int     // PSI bins, edges at the champion's quantiles (default 10)
	MinLabels uint64  // labeled requests needed before label metrics are shown (default 100)
	Z         float64 // confidence interval half-width in standard errors (default 1.96: 95 %)
}

// DefaultOptions returns the defaults.
func DefaultOptions() Options { return Options{Bins: 10, MinLabels: 100, Z: 1.96} }

// The parts of Stats, as the read API reports them.
type (
	Quantiles    = apiv1.Quantiles
	Latency      = apiv1.Latency
	Errors       = apiv1.Errors
	Predictions  = apiv1.Predictions
	LabelMetrics = apiv1.LabelMetrics
	Difference   = apiv1.Difference
	Labels       = apiv1.Labels
)

// Stats are the statistics of one champion-vs-shadow window, as the read API reports them
// (apiv1.Stats), with the windows they were computed from, for the estimates rules judge on.
type Stats struct {
	apiv1.Stats

	w   *window.Window // the window these statistics were computed from
	ref *window.Window // the noise baseline's window, when latency is compared like for like
}

func ptr(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

func ratio(a, b uint64) *float64 {
	if b == 0 {
		return nil
	}
	return ptr(float64(a) / float64(b))
}

func quantiles(d *sketch.Digest, scale float64) Quantiles {
	if d.Count() == 0 {
		return Quantiles{}
	}
	return Quantiles{P50: ptr(d.Quantile(0.5) * scale), P95: ptr(d.Quantile(0.95) * scale), P99: ptr(d.Quantile(0.99) * scale)}
}

func div(a, b *float64) *float64 {
	if a == nil || b == nil || *b == 0 {
		return nil
	}
	return ptr(*a / *b)
}

func errs(s window.Side) Errors {
	var n uint64
	for _, v := range s.Errors {
		n += v
	}
	// Every answered or failed call has a latency; failures without one are counted in Errors.
	answered := s.Latency.Count()
	return Errors{Rate: ratio(n, max(answered, n)), ByKind: s.Errors}
}

// Compute returns the statistics of w.
func Compute(w *window.Window, o Options) Stats {
	if o.Bins == 0 {
		o = DefaultOptions()
	}
	st := Stats{Stats: apiv1.Stats{Total: w.Total, Statuses: w.Statuses, NotShadowed: w.NotShadowed, Coverage: ratio(w.Statuses[schemas.StatusComplete], w.Total)}}
	st.Latency.Champion = quantiles(w.Champion.Latency, 1e-3)
	st.Latency.Shadow = quantiles(w.Shadow.Latency, 1e-3)
	st.Latency.Ratio = Quantiles{P50: div(st.Latency.Shadow.P50, st.Latency.Champion.P50), P95: div(st.Latency.Shadow.P95, st.Latency.Champion.P95), P99: div(st.Latency.Shadow.P99, st.Latency.Champion.P99)}
	st.Latency.Reference = "champion"
	st.Champion, st.Shadow = errs(w.Champion), errs(w.Shadow)
	st.PairedErrors = apiv1.PairedErrors(w.Errors)
	st.Dispatch = w.Dispatch
	st.Versions = apiv1.Versions{Champion: w.Champion.Versions, Shadow: w.Shadow.Versions}
	var dispatched uint64
	for _, n := range w.Dispatch {
		dispatched += n
	}
	st.Paced = ratio(w.Dispatch[schemas.DispatchPaced], dispatched)
	if pe := w.Errors; pe.N > 0 {
		st.ErrorDiff = ptr((float64(pe.ShadowOnly) - float64(pe.ChampionOnly)) / float64(pe.N))
	}
	st.w = w
	st.Predictions = predictions(w, o)
	st.Labels = labels(w, o)
	return st
}

func predictions(w *window.Window, o Options) Predictions {
	p := Predictions{
		Compared: w.Compared, Agreement: ratio(w.Agree, w.Compared),
		ChampionNonFinite: w.Champion.NonFinite, ShadowNonFinite: w.Shadow.NonFinite,
	}
	cn, sn := w.Champion.Predictions.Count(), w.Shadow.Predictions.Count()
	cc, sc := w.Champion.Classes.Total(), w.Shadow.Classes.Total()
	switch {
	case cn > 0 && sn > 0 && cn+sn >= cc+sc:
		p.Kind, p.Champion, p.Shadow = "number", cn, sn
		psi, ks := sketch.Compare(w.Champion.Predictions, w.Shadow.Predictions, o.Bins)
		p.PSI, p.KS = ptr(psi), ptr(ks)
		p.Diff = quantiles(w.Diff, 1)
	case cc > 0 && sc > 0:
		p.Kind, p.Champion, p.Shadow = "class", cc, sc
		p.PSI = ptr(sketch.ClassPSI(w.Champion.Classes, w.Shadow.Classes))
		stat, df, pv := sketch.ChiSquare(w.Champion.Classes, w.Shadow.Classes)
		p.ChiSquare, p.ChiDF, p.ChiP = ptr(stat), df, ptr(pv)
	}
	return p
}

func metrics(l window.Labels) LabelMetrics {
	m := LabelMetrics{Accuracy: ratio(l.Correct, l.Decided)}
	if l.Scored > 0 {
		n := float64(l.Scored)
		m.MAE, m.RMSE = ptr(l.AbsErr/n), ptr(math.Sqrt(l.SqErr/n))
	}
	if l.Binary > 0 {
		n := float64(l.Binary)
		m.LogLoss, m.Brier = ptr(l.LogLoss/n), ptr(l.Brier/n)
	}
	return m
}

func labels(w *window.Window, o Options) Labels {
	l := Labels{N: w.Paired.N, MinLabels: o.MinLabels}
	if w.Paired.N < o.MinLabels || w.Paired.N == 0 {
		return l
	}
	l.Shown = true
	l.Champion, l.Shadow = metrics(w.Champion.Labels), metrics(w.Shadow.Labels)
	p := w.Paired
	switch {
	case p.Decided > 0:
		// Paired difference of proportions: d = (b − c)/n with b, c the requests only the
		// shadow, only the champion got right; var(d) = ((b + c)/n − d²)/n.
		n := float64(p.Decided)
		d := (float64(p.ShadowOnly) - float64(p.ChampionOnly)) / n
		se := math.Sqrt(max(0, (float64(p.ShadowOnly+p.ChampionOnly)/n-d*d)/n))
		l.Difference = &Difference{Metric: "accuracy", Value: ptr(d), Low: ptr(d - o.Z*se), High: ptr(d + o.Z*se), N: p.Decided}
	case p.Scored > 0:
		// Mean paired difference of absolute errors (shadow − champion: negative is better).
		n := float64(p.Scored)
		d := p.AbsDiff / n
		se := math.Sqrt(max(0, p.AbsDiffSq/n-d*d) / n)
		l.Difference = &Difference{Metric: "mae", Value: ptr(d), Low: ptr(d - o.Z*se), High: ptr(d + o.Z*se), N: p.Scored}
	}
	return l
}

// ShadowReport is one shadow's statistics against the champion, with the noise-baseline
// shadow's statistics over the same range as its noise floor (nil when the experiment has no
// baseline, or for the baseline itself).
type ShadowReport struct {
	Shadow     string
	Role       string
	Stats      Stats
	NoiseFloor *Stats
	Baseline   string
}

// API returns r as the read API reports it.
func (r ShadowReport) API() apiv1.ShadowReport {
	out := apiv1.ShadowReport{Shadow: r.Shadow, Role: r.Role, Stats: r.Stats.Stats, Baseline: r.Baseline}
	if r.NoiseFloor != nil {
		floor := r.NoiseFloor.Stats
		out.NoiseFloor = &floor
	}
	return out
}

// Report computes every shadow's statistics from its merged window, sorted with candidates
// first then by name, and attaches the noise floor.
func Report(ws map[string]*window.Window, o Options) []ShadowReport {
	var out []ShadowReport
	var baseline *ShadowReport
	for name, w := range ws {
		out = append(out, ShadowReport{Shadow: name, Role: w.Role, Stats: Compute(w, o)})
	}
	sort.Slice(out, func(i, j int) bool {
		bi, bj := out[i].Role == schemas.RoleNoiseBaseline, out[j].Role == schemas.RoleNoiseBaseline
		if bi != bj {
			return bj
		}
		return out[i].Shadow < out[j].Shadow
	})
	for i := range out {
		if out[i].Role == schemas.RoleNoiseBaseline && baseline == nil {
			baseline = &out[i]
		}
	}
	if baseline != nil {
		floor := baseline.Stats
		for i := range out {
			if out[i].Shadow != baseline.Shadow {
				out[i].NoiseFloor, out[i].Baseline = &floor, baseline.Shadow
				out[i].Stats.likeForLike(baseline.Shadow, ws[baseline.Shadow])
			}
		}
	}
	return out
}

// likeForLike makes the latency comparison against the noise baseline's latency (ref), timed
// the same way as this shadow's.
func (s *Stats) likeForLike(name string, ref *window.Window) {
	if ref == nil || ref.Shadow.Latency.Count() == 0 {
		return
	}
	s.ref = ref
	refQ := quantiles(ref.Shadow.Latency, 1e-3)
	s.Latency.Ratio = Quantiles{P50: div(s.Latency.Shadow.P50, refQ.P50), P95: div(s.Latency.Shadow.P95, refQ.P95), P99: div(s.Latency.Shadow.P99, refQ.P99)}
	s.Latency.Reference, s.Latency.LikeForLike = "noise_baseline:"+name, true
}

// Metric names a statistic an alert rule can watch.
type Metric = apiv1.Metric

// The metrics alert rules can watch.
const (
	MetricPSI           Metric = "psi"                  // prediction PSI (numbers or classes)
	MetricKS            Metric = "ks"                   // prediction KS (numbers)
	MetricChiSquareP    Metric = "chi_square_p"         // p-value of the class chi-square test
	MetricDisagreement  Metric = "disagreement"         // 1 − agreement
	MetricLatencyP50    Metric = "latency_p50_ratio"    // shadow ÷ champion p50 latency
	MetricLatencyP95    Metric = "latency_p95_ratio"    // shadow ÷ champion p95 latency
	MetricLatencyP99    Metric = "latency_p99_ratio"    // shadow ÷ champion p99 latency
	MetricErrorRateDiff Metric = "error_rate_diff"      // shadow − champion error rate
	MetricAccuracyDiff  Metric = "accuracy_diff"        // shadow − champion accuracy on labels
	MetricMAEDiff       Metric = "mae_diff"             // shadow − champion mean absolute error
	MetricCoverage      Metric = "coverage"             // complete ÷ requests
	MetricShadowMissing Metric = "shadow_missing_rate"  // shadow_missing ÷ requests
	MetricLatencyMean   Metric = "latency_mean_diff_ms" // mean per-request latency difference vs the reference
)

// Metrics lists every metric name.
var Metrics = []Metric{
	MetricPSI, MetricKS, MetricChiSquareP, MetricDisagreement, MetricLatencyP50, MetricLatencyP95, MetricLatencyP99,
	MetricErrorRateDiff, MetricAccuracyDiff, MetricMAEDiff, MetricCoverage, MetricShadowMissing, MetricLatencyMean,
}

// Value returns metric m of s and the sample size it rests on; ok is false when it cannot be
// computed (no data, or labels below the minimum).
func (s Stats) Value(m Metric) (value float64, samples uint64, ok bool) {
	get := func(p *float64, n uint64) (float64, uint64, bool) {
		if p == nil {
			return 0, n, false
		}
		return *p, n, true
	}
	pn := min(s.Predictions.Champion, s.Predictions.Shadow)
	switch m {
	case MetricPSI:
		return get(s.Predictions.PSI, pn)
	case MetricKS:
		return get(s.Predictions.KS, pn)
	case MetricChiSquareP:
		return get(s.Predictions.ChiP, pn)
	case MetricDisagreement:
		if s.Predictions.Agreement == nil {
			return 0, s.Predictions.Compared, false
		}
		return 1 - *s.Predictions.Agreement, s.Predictions.Compared, true
	case MetricLatencyP50:
		return get(s.Latency.Ratio.P50, s.Total)
	case MetricLatencyP95:
		return get(s.Latency.Ratio.P95, s.Total)
	case MetricLatencyP99:
		return get(s.Latency.Ratio.P99, s.Total)
	case MetricErrorRateDiff:
		return get(s.ErrorDiff, s.PairedErrors.N)
	case MetricLatencyMean:
		m := s.latencyMoments()
		if m.N == 0 {
			return 0, 0, false
		}
		return m.Sum / float64(m.N), m.N, true
	case MetricCoverage:
		return get(s.Coverage, s.Total)
	case MetricShadowMissing:
		return get(ratio(s.Statuses[schemas.StatusShadowMissing], s.Total), s.Total)
	case MetricAccuracyDiff, MetricMAEDiff:
		d := s.Labels.Difference
		if d == nil || string(m) != d.Metric+"_diff" {
			return 0, s.Labels.N, false
		}
		return get(d.Value, d.N)
	}
	return 0, 0, false
}
