package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// State is an alert's state for one experiment, shadow and rule.
type State string

// States. Resolved behaves as inactive, but remembers that the alert fired.
const (
	StateInactive State = "inactive"
	StatePending  State = "pending"
	StateFiring   State = "firing"
	StateResolved State = "resolved"
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

// Range is the time range a statistic was computed over.
type Range struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Links point to the read API for the alert's numbers.
type Links struct {
	Stats   string `json:"stats"`
	Alerts  string `json:"alerts"`
	History string `json:"history"`
}

// PayloadVersion is the version of Payload; a change that breaks receivers increments it.
const PayloadVersion = 1

// Payload is the JSON body of an alert webhook (Standard Webhooks: type, timestamp, data).
type Payload struct {
	Type      string    `json:"type"` // alert.firing or alert.resolved
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is what an alert webhook says.
type Data struct {
	Version       int      `json:"version"`
	ID            string   `json:"id"` // the webhook-id
	Experiment    string   `json:"experiment"`
	Shadow        string   `json:"shadow"`
	Rule          Rule     `json:"rule"`
	State         State    `json:"state"`
	PreviousState State    `json:"previous_state"`
	Value         *float64 `json:"value"`
	NoiseFloor    *float64 `json:"noise_floor"`
	Interval      Interval `json:"interval"` // the rule's interval: a FAIL means it lies beyond the threshold
	Status        string   `json:"status"`   // the rule's status: FAIL while firing
	Reason        string   `json:"reason"`
	Samples       uint64   `json:"samples"`
	Window        Range    `json:"window"`
	Links         Links    `json:"links"`
}

// Interval is a rule's interval at one evaluation; a nil bound is open on that side or not
// computable yet.
type Interval struct {
	Low  *float64 `json:"low"`
	High *float64 `json:"high"`
}

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
