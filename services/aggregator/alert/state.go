package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// State is an alert's state for one experiment, shadow and rule (apiv1.State).
type State = apiv1.State

// States. Resolved behaves as inactive, but remembers that the alert fired.
const (
	StateInactive = apiv1.StateInactive
	StatePending  = apiv1.StatePending
	StateFiring   = apiv1.StateFiring
	StateResolved = apiv1.StateResolved
)

// Next returns the state after one evaluation in which the rule's condition held or not, and
// the new count of consecutive evaluations in which it held. The condition must hold for
// rule.For consecutive evaluations to fire; one evaluation without it resolves a firing alert
// and returns a pending one to inactive.
func Next(prev State, streak int, r Rule, holds bool) (State, int) {
	if holds {
		streak++
		if streak >= r.For {
			return StateFiring, streak
		}
		return StatePending, streak
	}
	switch prev {
	case StateFiring, StateResolved:
		return StateResolved, 0
	}
	return StateInactive, 0
}

// Notifies reports whether entering state to from state from sends a notification: firing
// and resolved do, pending and inactive do not (as in Alertmanager).
func Notifies(from, to State) bool {
	return from != to && (to == StateFiring || (to == StateResolved && from == StateFiring))
}

// MessageID is the stable webhook-id of one transition: the same transition always gets the
// same id, so receivers deduplicate retries and redeliveries with it.
func MessageID(experiment, shadow, rule string, historyID int64, to State) string {
	h := sha256.Sum256([]byte(strings.Join([]string{experiment, shadow, rule, fmt.Sprint(historyID), string(to)}, "\x00")))
	return "msg_" + hex.EncodeToString(h[:12])
}

// The webhook and read-API types alerts are reported in.
type (
	Range      = apiv1.Range
	Links      = apiv1.Links
	Payload    = apiv1.Payload
	Data       = apiv1.Data
	Interval   = apiv1.Interval
	Current    = apiv1.Current
	Transition = apiv1.Transition
)

// SlackText is a one-line human summary of d, for Slack-compatible bodies.
func SlackText(d Data) string {
	icon := ":rotating_light:"
	if d.State == StateResolved {
		icon = ":white_check_mark:"
	}
	val := func(p *float64) string {
		if p == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.4g", *p)
	}
	return fmt.Sprintf("%s [%s] %s %s: %s/%s %s = %s [%s, %s] (threshold %s %g, noise floor %s, n=%d) over %s–%s <%s|stats>",
		icon, strings.ToUpper(string(d.State)), d.Rule.Severity, d.Rule.Name, d.Experiment, d.Shadow, d.Rule.Metric,
		val(d.Value), val(d.Interval.Low), val(d.Interval.High), d.Rule.Comparator, d.Rule.Threshold, val(d.NoiseFloor), d.Samples,
		d.Window.From.Format(time.RFC3339), d.Window.To.Format(time.RFC3339), d.Links.Stats)
}
