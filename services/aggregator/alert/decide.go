package alert

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"

	"github.com/understudy-ml/understudy/services/aggregator/stats"
)

// Statuses of a rule and of a verdict (apiv1's).
const (
	StatusPass            = apiv1.StatusPass
	StatusFail            = apiv1.StatusFail
	StatusContinue        = apiv1.StatusContinue
	StatusInstrumentError = apiv1.StatusInstrumentError
)

// RuleResult and Verdict are judgements as the read API reports them.
type (
	RuleResult = apiv1.RuleResult
	Verdict    = apiv1.Verdict
)

// Judgement is what Judge needs besides the rules.
type Judgement struct {
	Decision Decision
	Observed time.Duration // how long the shadow has been observed in the range
	// Firing names the threshold-only rules (stats.Sequential false) whose alert is firing:
	// those rules FAIL only after their breach held for `for:` consecutive evaluations.
	// Nil means judge threshold-only rules on the range alone (a report).
	Firing map[string]bool
}

// Judge returns the verdict of rep (a candidate's statistics, with its noise floor when the
// experiment has a copy of the champion) against rules.
func Judge(rules []Rule, rep stats.ShadowReport, j Judgement) Verdict {
	v := Verdict{Shadow: rep.Shadow, Alpha: j.Decision.Alpha, Observed: j.Observed, MinDuration: j.Decision.MinDuration, Rules: []RuleResult{}}
	alpha := j.Decision.Alpha / float64(max(1, len(rules)))
	worst := map[string]int{StatusPass: 0, StatusContinue: 1, StatusInstrumentError: 2, StatusFail: 3}
	v.Status = StatusPass
	var failing, unsure []string
	for _, r := range rules {
		res := judgeRule(r, rep, alpha, j)
		v.Rules = append(v.Rules, res)
		if worst[res.Status] > worst[v.Status] {
			v.Status = res.Status
		}
		switch res.Status {
		case StatusFail:
			failing = append(failing, r.Name+": "+res.Reason)
		case StatusContinue, StatusInstrumentError:
			unsure = append(unsure, r.Name+": "+res.Reason)
		}
	}
	switch v.Status {
	case StatusFail:
		v.Summary = fmt.Sprintf("%s: FAIL, %d rule(s) failed: %s", rep.Shadow, len(failing), strings.Join(failing, "; "))
	case StatusInstrumentError:
		v.Summary = fmt.Sprintf("%s: INSTRUMENT_ERROR, the noise baseline breaches a rule; the measurement is at fault, not the candidate: %s", rep.Shadow, strings.Join(unsure, "; "))
	case StatusContinue:
		v.Summary = fmt.Sprintf("%s: CONTINUE, not decidable yet: %s", rep.Shadow, strings.Join(unsure, "; "))
	default:
		v.Summary = fmt.Sprintf("%s: PASS, every rule passes at family-wise α = %g", rep.Shadow, j.Decision.Alpha)
	}
	return v
}

func judgeRule(r Rule, rep stats.ShadowReport, alpha float64, j Judgement) RuleResult {
	res := RuleResult{Rule: r.Name, Metric: r.Metric, Comparator: r.Comparator, Threshold: r.Threshold, Margin: r.Margin, MinSamples: r.MinSamples, Status: StatusContinue}
	if !rep.Stats.Applicable(r.Metric) {
		res.Status, res.Reason = StatusPass, fmt.Sprintf("not applicable to %s predictions", rep.Stats.Predictions.Kind)
		if d := rep.Stats.Labels.Difference; d != nil && (r.Metric == stats.MetricAccuracyDiff || r.Metric == stats.MetricMAEDiff) {
			res.Reason = "not applicable: the labels give " + d.Metric
		}
		return res
	}
	est, ok := rep.Stats.Estimate(r.Metric, alpha)
	if !ok {
		res.Reason = fmt.Sprintf("not computable yet (n=%d)", est.N)
		return res
	}
	res.Estimate = &est
	// The noise floor: the copy's own estimate against the champion. A latency rule compared
	// with the copy already has it as its reference, so it has no separate floor.
	var floor *stats.Estimate
	latencyVsCopy := isLatency(r.Metric) && rep.Stats.Latency.LikeForLike
	if rep.NoiseFloor != nil && !latencyVsCopy {
		if f, ok := rep.NoiseFloor.Estimate(r.Metric, alpha); ok {
			floor = &f
			res.NoiseFloor = floor
		}
	}
	if est.N < r.MinSamples {
		res.Reason = fmt.Sprintf("%d of %d samples", est.N, r.MinSamples)
		return res
	}
	// A/A guard: the copy itself fails this rule.
	if floor != nil && floor.N >= r.MinSamples && r.breached(*floor, nil, j, true) {
		res.Status = StatusInstrumentError
		res.Reason = fmt.Sprintf("the noise baseline breaches it (%s), so no candidate can be judged on it", describe(r, *floor))
		return res
	}
	switch {
	case r.breached(est, floor, j, false):
		res.Status = StatusFail
		res.Reason = describe(r, est)
		if est.Method != stats.MethodThreshold {
			res.Reason += fmt.Sprintf(": the interval lies beyond the threshold %g", r.Threshold)
		}
		if floor != nil {
			res.Reason += fmt.Sprintf(", beyond the noise floor %s by more than %g", apiv1.FormatNumber(floor.Value), r.Margin)
		}
	case r.cleared(est):
		if j.Observed < j.Decision.MinDuration {
			res.Reason = fmt.Sprintf("on the good side (%s), but observed %s of the minimum %s", describe(r, est), j.Observed.Round(time.Second), j.Decision.MinDuration)
			return res
		}
		res.Status = StatusPass
		res.Reason = describe(r, est)
		if est.Method != stats.MethodThreshold {
			res.Reason += fmt.Sprintf(": the interval lies on the good side of the threshold %g", r.Threshold)
		}
	case est.Method == stats.MethodThreshold && r.Holds(est.Value):
		res.Reason = describe(r, est) + fmt.Sprintf(": FAILs once held for %d consecutive evaluations (its alert fires)", r.For)
	default:
		res.Reason = describe(r, est) + fmt.Sprintf(": the interval straddles the threshold %g", r.Threshold)
	}
	return res
}

// breached reports whether est fails r: for a sequential metric its whole interval is beyond
// the threshold and beyond the floor's far bound by the margin; for a threshold-only metric the
// estimate is (and, when the alert engine's state is known, has been for `for:` evaluations).
// guard judges the copy itself, whose alert state is not kept.
func (r Rule) breached(est stats.Estimate, floor *stats.Estimate, j Judgement, guard bool) bool {
	if est.Method == stats.MethodThreshold {
		if !r.Holds(est.Value) {
			return false
		}
		if floor != nil && !r.beyondBy(est.Value, floor.Value) {
			return false
		}
		return guard || j.Firing == nil || j.Firing[r.Name]
	}
	near := est.Low // the bound nearest the good side
	if !r.badHigh() {
		near = est.High
	}
	if !r.Holds(near) {
		return false
	}
	if floor == nil {
		return true
	}
	far := floor.High // the floor's bound farthest toward the bad side
	if !r.badHigh() {
		far = floor.Low
	}
	return r.beyondBy(near, far)
}

// beyondBy reports whether x is beyond ref by more than the margin, toward the bad side.
func (r Rule) beyondBy(x, ref float64) bool {
	if math.IsInf(ref, 0) || math.IsNaN(ref) {
		return false
	}
	if r.badHigh() {
		return x-ref > r.Margin
	}
	return ref-x > r.Margin
}

// cleared reports whether est's whole interval is on the good side of the threshold.
func (r Rule) cleared(est stats.Estimate) bool {
	far := est.High
	if !r.badHigh() {
		far = est.Low
	}
	return !math.IsInf(far, 0) && !r.Holds(far)
}

func isLatency(m stats.Metric) bool {
	switch m {
	case stats.MetricLatencyP50, stats.MetricLatencyP95, stats.MetricLatencyP99, stats.MetricLatencyMean:
		return true
	}
	return false
}

func describe(r Rule, e stats.Estimate) string {
	if e.Method == stats.MethodThreshold {
		return fmt.Sprintf("%s = %s (threshold only; fails when %s %g)", r.Metric, apiv1.FormatNumber(e.Value), r.Comparator, r.Threshold)
	}
	return fmt.Sprintf("%s = %s [%s, %s] (n=%d)", r.Metric, apiv1.FormatNumber(e.Value), apiv1.FormatNumber(e.Low), apiv1.FormatNumber(e.High), e.N)
}
