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
	"os"
	"sort"
	"strings"

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

// DefaultRules are the rules every experiment gets unless its overrides change them:
// prediction PSI ≥ 0.1 (warning) and ≥ 0.2 (critical), KS ≥ 0.1 on at least 1,000
// predictions, shadow/champion p99 latency ≥ 1.2, error rate higher by ≥ 1 percentage point,
// accuracy lower by ≥ 1 point on at least 500 labels.
func DefaultRules() []Rule {
	return []Rule{
		{Name: "psi_warning", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.1, MinSamples: 100, For: 2, Severity: SeverityWarning},
		{Name: "psi_critical", Metric: stats.MetricPSI, Comparator: ">=", Threshold: 0.2, MinSamples: 100, For: 2, Severity: SeverityCritical},
		{Name: "ks", Metric: stats.MetricKS, Comparator: ">=", Threshold: 0.1, MinSamples: 1000, For: 2, Severity: SeverityWarning},
		{Name: "latency_p99_ratio", Metric: stats.MetricLatencyP99, Comparator: ">=", Threshold: 1.2, MinSamples: 100, For: 3, Severity: SeverityWarning},
		{Name: "error_rate_diff", Metric: stats.MetricErrorRateDiff, Comparator: ">=", Threshold: 0.01, MinSamples: 100, For: 2, Severity: SeverityCritical},
		{Name: "accuracy_diff", Metric: stats.MetricAccuracyDiff, Comparator: "<=", Threshold: -0.01, MinSamples: 500, For: 1, Severity: SeverityCritical},
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
	Disabled   bool     `yaml:"disabled"`
}

// File is the alert rules file. Rules, when given, replace DefaultRules for every experiment;
// Experiments override them per experiment.
type File struct {
	Rules       []Rule                `yaml:"rules"`
	Experiments map[string][]Override `yaml:"experiments"`
}

// Rules resolves the rules of each experiment.
type Rules struct {
	base        []Rule
	experiments map[string][]Rule
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
	rs := &Rules{base: sorted(base), experiments: map[string][]Rule{}}
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
		switch r.Severity {
		case SeverityInfo, SeverityWarning, SeverityCritical:
		default:
			errs = append(errs, fmt.Errorf("%s: severity %q is not info, warning or critical", at, r.Severity))
		}
	}
	return errs
}

// Verdict is a one-line judgement of a shadow over a range against the alert rules, ignoring
// their for: durations: fail when any rule holds, insufficient when none holds but some lack
// samples (labels, typically), pass otherwise.
type Verdict struct {
	Shadow       string   `json:"shadow"`
	Status       string   `json:"status"` // pass, fail or insufficient
	Failing      []string `json:"failing"`
	Insufficient []string `json:"insufficient"`
	Summary      string   `json:"summary"`
}

// Judge returns the verdict of one shadow's statistics against rules.
func Judge(rules []Rule, shadow string, st stats.Stats) Verdict {
	v := Verdict{Shadow: shadow, Failing: []string{}, Insufficient: []string{}}
	for _, r := range rules {
		value, n, checkable, holds := r.Evaluate(st)
		switch {
		case !checkable:
			v.Insufficient = append(v.Insufficient, fmt.Sprintf("%s (n=%d < %d)", r.Name, n, r.MinSamples))
		case holds:
			v.Failing = append(v.Failing, fmt.Sprintf("%s: %s %.4g %s %g", r.Name, r.Metric, value, r.Comparator, r.Threshold))
		}
	}
	switch {
	case len(v.Failing) > 0:
		v.Status = "fail"
		v.Summary = fmt.Sprintf("%s: NOT READY, %d rule(s) breached: %s", shadow, len(v.Failing), strings.Join(v.Failing, "; "))
	case len(v.Insufficient) > 0:
		v.Status = "insufficient"
		v.Summary = fmt.Sprintf("%s: no rule breached, but not enough evidence yet for %s", shadow, strings.Join(v.Insufficient, ", "))
	default:
		v.Status = "pass"
		v.Summary = fmt.Sprintf("%s: every alert rule passes over this range", shadow)
	}
	return v
}
