// Package alert evaluates alert rules over comparison statistics and keeps their states in
// Postgres: each rule, for each experiment and candidate shadow, moves inactive → pending →
// firing → resolved as its condition holds for consecutive evaluations or stops holding.
// Every transition is recorded in alert_history, and transitions to firing and resolved are
// queued as webhook notifications (package webhook) in the same transaction, so none is lost
// across restarts. Only one aggregator replica evaluates at a time: the holder of a Postgres
// session advisory lock.
package alert

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"sort"
	"time"

	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"gopkg.in/yaml.v3"
)

// Severities.
const (
	SeverityInfo     = "info"
	SeverityWarning  = "warning"
	SeverityCritical = "critical"
)

// Rule is one alert rule: the condition "metric comparator threshold", checked only when the
// metric rests on at least MinSamples samples, must hold for For consecutive evaluations
// before the alert fires.
type Rule struct {
	Name       string       `yaml:"name" json:"name"`
	Metric     stats.Metric `yaml:"metric" json:"metric"`
	Comparator string       `yaml:"comparator" json:"comparator"` // >=, >, <=, <
	Threshold  float64      `yaml:"threshold" json:"threshold"`
	MinSamples uint64       `yaml:"min_samples" json:"min_samples"`
	For        int          `yaml:"for" json:"for"` // consecutive evaluations; 1 fires at once
	Severity   string       `yaml:"severity" json:"severity"`
	// Margin is how far beyond the noise baseline (a copy of the champion) the candidate must
	// be, in the metric's units, on top of being beyond Threshold, for the rule to fail.
	Margin float64 `yaml:"margin" json:"margin"`
}

// Holds reports whether value satisfies the rule's comparison.
func (r Rule) Holds(value float64) bool {
	switch r.Comparator {
	case ">=":
		return value >= r.Threshold
	case ">":
		return value > r.Threshold
	case "<=":
		return value <= r.Threshold
	case "<":
		return value < r.Threshold
	}
	return false
}

// Evaluate computes the rule's metric over st: its value, the samples it rests on, whether it
// can be checked (computable and resting on at least MinSamples) and, if so, whether it holds.
func (r Rule) Evaluate(st stats.Stats) (value float64, samples uint64, checkable, holds bool) {
	value, samples, ok := st.Value(r.Metric)
	checkable = ok && samples >= r.MinSamples
	return value, samples, checkable, checkable && r.Holds(value)
}

// DefaultRules are the rules every experiment gets unless its overrides change them. Rules on
// metrics with confidence sequences (see stats.Sequential) decide on intervals; PSI and KS have
// none and need their breach for three consecutive evaluations:
//   - psi_warning, psi_critical: prediction PSI ≥ 0.1 / ≥ 0.2 on 1,000 predictions;
//   - ks: KS ≥ 0.1 on 1,000 predictions;
//   - latency_p99_ratio: p99 latency ≥ 1.1 × the reference's (the noise baseline when there is
//     one), 0.05 beyond the noise floor;
//   - error_rate_diff: shadow-only failures exceed champion-only failures by ≥ 1 point;
//   - accuracy_diff: accuracy lower by more than 0.5 point on at least 500 labels.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "psi_warning", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.1, MinSamples: 1000, For: 3, Severity: SeverityWarning, Margin: 0.02},
		{Name: "psi_critical", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.2, MinSamples: 1000, For: 3, Severity: SeverityCritical, Margin: 0.02},
		{Name: "ks", Metric: stats.MetricKS, Comparator: ">=", Threshold: 0.1, MinSamples: 1000, For: 3, Severity: SeverityWarning, Margin: 0.02},
		{Name: "latency_p99_ratio", Metric: stats.MetricLatencyP99, Comparator: ">=", Threshold: 1.1, MinSamples: 1000, For: 1, Severity: SeverityWarning, Margin: 0.05},
		{Name: "error_rate_diff", Metric: stats.MetricErrorRateDiff, Comparator: ">=", Threshold: 0.01, MinSamples: 1000, For: 1, Severity: SeverityCritical},
		{Name: "accuracy_diff", Metric: stats.MetricAccuracyDiff, Comparator: "<", Threshold: -0.005, MinSamples: 500, For: 1, Severity: SeverityCritical},
	}
}

// Override changes some fields of a rule by name for one experiment (fields left out keep
// the default), adds a rule when the name is new (then every field is required), or removes it
// with disabled: true.
type Override struct {
	Name       string   `yaml:"name"`
	Metric     *string  `yaml:"metric"`
	Comparator *string  `yaml:"comparator"`
	Threshold  *float64 `yaml:"threshold"`
	MinSamples *uint64  `yaml:"min_samples"`
	For        *int     `yaml:"for"`
	Severity   *string  `yaml:"severity"`
	Margin     *float64 `yaml:"margin"`
	Disabled   bool     `yaml:"disabled"`
}

// File is the alert rules file. Rules, when given, replace DefaultRules for every experiment;
// Experiments override them per experiment.
type File struct {
	Rules       []Rule                `yaml:"rules"`
	Experiments map[string][]Override `yaml:"experiments"`
	// Decision sets the verdict's error level and minimum observation for every experiment;
	// Decisions override it per experiment (fields left out keep the base).
	Decision  *Decision            `yaml:"decision"`
	Decisions map[string]*Decision `yaml:"decisions"`
}

// Decision sets how a verdict is reached: Alpha is the family-wise error over an experiment's
// rules (each rule gets Alpha ÷ the number of rules: Bonferroni), MinDuration the observation
// time before any rule or verdict can PASS.
type Decision struct {
	Alpha       float64       `yaml:"alpha" json:"alpha"`
	MinDuration time.Duration `yaml:"min_duration" json:"min_duration_ns"`
}

// DefaultDecision is α = 0.05 and one hour of observation.
func DefaultDecision() Decision { return Decision{Alpha: 0.05, MinDuration: time.Hour} }

func (d Decision) with(o *Decision) Decision {
	if o == nil {
		return d
	}
	if o.Alpha != 0 {
		d.Alpha = o.Alpha
	}
	if o.MinDuration != 0 {
		d.MinDuration = o.MinDuration
	}
	return d
}

func (d Decision) validate(where string) []error {
	var errs []error
	if !(d.Alpha > 0 && d.Alpha <= 0.5) {
		errs = append(errs, fmt.Errorf("%s: alpha %g is not in (0, 0.5]", where, d.Alpha))
	}
	if d.MinDuration < 0 {
		errs = append(errs, fmt.Errorf("%s: min_duration %s is negative", where, d.MinDuration))
	}
	return errs
}

// Rules resolves the rules of each experiment.
type Rules struct {
	base        []Rule
	experiments map[string][]Rule
	decision    Decision
	decisions   map[string]Decision
}

// Decision returns the decision settings of experiment.
func (rs *Rules) Decision(experiment string) Decision {
	if d, ok := rs.decisions[experiment]; ok {
		return d
	}
	return rs.decision
}

// For returns the rules of experiment, sorted by name.
func (rs *Rules) For(experiment string) []Rule {
	if r, ok := rs.experiments[experiment]; ok {
		return r
	}
	return rs.base
}

// Default returns rules that are DefaultRules for every experiment.
func Default() *Rules {
	r, _ := Parse(nil)
	return r
}

// Load reads a rules file; an empty path gives Default.
func Load(path string) (*Rules, error) {
	if path == "" {
		return Default(), nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read alert rules: %w", err)
	}
	return Parse(b)
}

// Parse parses and validates a rules file, reporting every problem.
func Parse(b []byte) (*Rules, error) {
	var f File
	if len(bytes.TrimSpace(b)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&f); err != nil {
			return nil, fmt.Errorf("parse alert rules: %w", err)
		}
	}
	base := f.Rules
	if len(base) == 0 {
		base = DefaultRules()
	}
	var errs []error
	errs = append(errs, validate("rules", base)...)
	rs := &Rules{base: sorted(base), experiments: map[string][]Rule{}, decision: DefaultDecision().with(f.Decision), decisions: map[string]Decision{}}
	errs = append(errs, rs.decision.validate("decision")...)
	for exp, d := range f.Decisions {
		rs.decisions[exp] = rs.decision.with(d)
		errs = append(errs, rs.decisions[exp].validate("decisions."+exp)...)
	}
	for exp, ovs := range f.Experiments {
		rules, oerrs := apply(base, ovs)
		for _, e := range oerrs {
			errs = append(errs, fmt.Errorf("experiments.%s: %w", exp, e))
		}
		errs = append(errs, validate("experiments."+exp, rules)...)
		rs.experiments[exp] = sorted(rules)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid alert rules: %w", err)
	}
	return rs, nil
}

func sorted(rs []Rule) []Rule {
	out := append([]Rule(nil), rs...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func apply(base []Rule, ovs []Override) ([]Rule, []error) {
	byName := map[string]int{}
	out := append([]Rule(nil), base...)
	for i, r := range out {
		byName[r.Name] = i
	}
	var errs []error
	removed := map[string]bool{}
	for _, o := range ovs {
		if o.Name == "" {
			errs = append(errs, errors.New("override without a name"))
			continue
		}
		if o.Disabled {
			removed[o.Name] = true
			continue
		}
		i, ok := byName[o.Name]
		if !ok {
			out = append(out, Rule{Name: o.Name})
			i = len(out) - 1
			byName[o.Name] = i
		}
		r := &out[i]
		if o.Metric != nil {
			r.Metric = stats.Metric(*o.Metric)
		}
		if o.Comparator != nil {
			r.Comparator = *o.Comparator
		}
		if o.Threshold != nil {
			r.Threshold = *o.Threshold
		} else if !ok {
			errs = append(errs, fmt.Errorf("rule %s: threshold required for a new rule", o.Name))
		}
		if o.MinSamples != nil {
			r.MinSamples = *o.MinSamples
		}
		if o.For != nil {
			r.For = *o.For
		} else if !ok {
			r.For = 1
		}
		if o.Margin != nil {
			r.Margin = *o.Margin
		}
		if o.Severity != nil {
			r.Severity = *o.Severity
		} else if !ok {
			r.Severity = SeverityWarning
		}
	}
	kept := out[:0]
	for _, r := range out {
		if !removed[r.Name] {
			kept = append(kept, r)
		}
	}
	return kept, errs
}

// metricBounds are the values a metric can take and the direction in which it is worse.
type metricBounds struct {
	low, high float64
	badHigh   bool
}

var bounds = map[stats.Metric]metricBounds{
	stats.MetricPSI:           {0, math.Inf(1), true},
	stats.MetricKS:            {0, 1, true},
	stats.MetricChiSquareP:    {0, 1, false},
	stats.MetricDisagreement:  {0, 1, true},
	stats.MetricLatencyP50:    {0, math.Inf(1), true},
	stats.MetricLatencyP95:    {0, math.Inf(1), true},
	stats.MetricLatencyP99:    {0, math.Inf(1), true},
	stats.MetricErrorRateDiff: {-1, 1, true},
	stats.MetricAccuracyDiff:  {-1, 1, false},
	stats.MetricMAEDiff:       {math.Inf(-1), math.Inf(1), true},
	stats.MetricCoverage:      {0, 1, false},
	stats.MetricShadowMissing: {0, 1, true},
	stats.MetricLatencyMean:   {math.Inf(-1), math.Inf(1), true},
}

// badHigh reports whether the rule's metric is worse when higher (comparators > and >=).
func (r Rule) badHigh() bool { return r.Comparator == ">=" || r.Comparator == ">" }

func validate(where string, rs []Rule) []error {
	var errs []error
	known := map[stats.Metric]bool{}
	for _, m := range stats.Metrics {
		known[m] = true
	}
	seen := map[string]bool{}
	for i, r := range rs {
		at := fmt.Sprintf("%s[%d] %s", where, i, r.Name)
		if r.Name == "" {
			errs = append(errs, fmt.Errorf("%s: name required", at))
		}
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("%s: duplicate name", at))
		}
		seen[r.Name] = true
		if !known[r.Metric] {
			errs = append(errs, fmt.Errorf("%s: unknown metric %q (known: %v)", at, r.Metric, stats.Metrics))
		}
		switch r.Comparator {
		case ">=", ">", "<=", "<":
		default:
			errs = append(errs, fmt.Errorf("%s: comparator %q is not one of >=, >, <=, <", at, r.Comparator))
		}
		if r.For < 1 {
			errs = append(errs, fmt.Errorf("%s: for must be at least 1 evaluation", at))
		}
		if r.Margin < 0 || math.IsNaN(r.Margin) {
			errs = append(errs, fmt.Errorf("%s: margin %g must be 0 or more", at, r.Margin))
		}
		if b, ok := bounds[r.Metric]; ok {
			if r.Threshold < b.low || r.Threshold > b.high || math.IsNaN(r.Threshold) {
				errs = append(errs, fmt.Errorf("%s: threshold %g is outside [%g, %g], the range of %s", at, r.Threshold, b.low, b.high, r.Metric))
			}
			if badHigh := r.Comparator == ">=" || r.Comparator == ">"; known[r.Metric] && (r.Comparator != "") && badHigh != b.badHigh {
				want := "< or <="
				if b.badHigh {
					want = "> or >="
				}
				errs = append(errs, fmt.Errorf("%s: comparator %s contradicts %s, which is worse when %s (use %s)", at, r.Comparator, r.Metric, map[bool]string{true: "higher", false: "lower"}[b.badHigh], want))
			}
		}
		if stats.Sequential(r.Metric) && r.MinSamples < 30 {
			errs = append(errs, fmt.Errorf("%s: min_samples %d is below 30, too few for its confidence sequence", at, r.MinSamples))
		}
		switch r.Severity {
		case SeverityInfo, SeverityWarning, SeverityCritical:
		default:
			errs = append(errs, fmt.Errorf("%s: severity %q is not info, warning or critical", at, r.Severity))
		}
	}
	return errs
}
