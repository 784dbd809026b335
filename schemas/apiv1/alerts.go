package apiv1

import "time"

// State is an alert's state for one experiment, shadow and rule.
type State string

// States. Resolved behaves as inactive, but remembers that the alert fired.
const (
	StateInactive State = "inactive"
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Rule statuses, worst last: a Verdict's status is the worst of its rules'.
const (
	// StatusPass: the interval lies entirely on the good side of the threshold, after the
	// minimum samples and the minimum observation time.
	StatusPass = "PASS"
	// StatusFail: the interval lies entirely beyond the threshold and beyond the noise
	// baseline by the rule's margin.
	StatusFail = "FAIL"
	// StatusContinue: not decidable yet; Reason says what is missing.
	StatusContinue = "CONTINUE"
	// StatusInstrumentError: the noise baseline (a copy of the champion) itself breaches the
	// rule, so the measurement, not the candidate, is at fault.
	StatusInstrumentError = "INSTRUMENT_ERROR"
)

// Interval is a rule's interval at one evaluation; a nil bound is open on that side or not
// computable yet. Threshold-only rules have none.
type Interval struct {
	Low  *float64 `json:"low"`
	High *float64 `json:"high"`
}

// Range is the time range a statistic was computed over.
type Range struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Current is an alert's stored state.
type Current struct {
	Experiment  string    `json:"experiment"`
	Shadow      string    `json:"shadow"`
	Rule        string    `json:"rule"`
	State       State     `json:"state"`
	Value       *float64  `json:"value"`
	NoiseFloor  *float64  `json:"noise_floor"`
	Interval    Interval  `json:"interval"`
	Status      string    `json:"status"` // the rule's status at the last evaluation
	Reason      string    `json:"reason"`
	Samples     int64     `json:"samples"`
	Since       time.Time `json:"since"`
	EvaluatedTo time.Time `json:"evaluated_to"`
}

// Transition is one recorded state change of an alert.
type Transition struct {
	ID         int64     `json:"id"`
	Experiment string    `json:"experiment"`
	Shadow     string    `json:"shadow"`
	Rule       string    `json:"rule"`
	Severity   string    `json:"severity"`
	From       State     `json:"from"`
	To         State     `json:"to"`
	Value      *float64  `json:"value"`
	NoiseFloor *float64  `json:"noise_floor"`
	Interval   Interval  `json:"interval"`
	Status     string    `json:"status"` // the rule's status that caused the transition
	Reason     string    `json:"reason"`
	Threshold  float64   `json:"threshold"`
	Samples    int64     `json:"samples"`
	Window     Range     `json:"window"`
	At         time.Time `json:"at"`
}

// RuleResult is one rule's judgement of one shadow.
type RuleResult struct {
	Rule       string    `json:"rule"`
	Metric     Metric    `json:"metric"`
	Comparator string    `json:"comparator"`
	Threshold  float64   `json:"threshold"`
	Margin     float64   `json:"margin"`
	Status     string    `json:"status"`
	Estimate   *Estimate `json:"estimate"`    // nil when not computable yet
	NoiseFloor *Estimate `json:"noise_floor"` // the noise baseline's, nil without one
	MinSamples uint64    `json:"min_samples"`
	Reason     string    `json:"reason"`
}

// Verdict is the judgement of one shadow over a range: the worst rule status (FAIL, then
// INSTRUMENT_ERROR, then CONTINUE; PASS only when every rule passes), at family-wise error
// Alpha over its rules.
type Verdict struct {
	Shadow      string        `json:"shadow"`
	Status      string        `json:"status"`
	Alpha       float64       `json:"alpha"`       // family-wise, over Rules
	Observed    time.Duration `json:"observed_ns"` // time since the first window in range
	MinDuration time.Duration `json:"min_duration_ns"`
	Rules       []RuleResult  `json:"rules"`
	Summary     string        `json:"summary"`
}
