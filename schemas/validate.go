package schemas

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrInvalid is wrapped by every error the Limits checks return: the record decoded but a
// value breaks the contract (it would become a bad Postgres key, metric label, HTTP header or
// an oversized Kafka record). Callers dead-letter such records with reason "invalid".
var ErrInvalid = errors.New("invalid record")

// FieldError names one field that breaks the contract and why. Its text never contains the
// value itself (which may be huge, binary or secret), only its size or the rule it breaks.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes every FieldError match ErrInvalid.
func (e *FieldError) Unwrap() error { return ErrInvalid }

// Limits bound every value of a record that another system stores, labels or forwards. The
// zero value is not useful: start from DefaultLimits.
type Limits struct {
	MaxID      int           // bytes of a request id
	MaxName    int           // bytes of an experiment, tenant, shadow, role, model, source, run id, class label or error kind
	MaxMessage int           // bytes of an error message
	MaxVector  int           // elements of a vector prediction
	MaxShadows int           // shadows in one comparison
	MaxFuture  time.Duration // how far an event time may lie ahead of the receiver's clock
	MaxLatency time.Duration // largest plausible latency
}

// MaxComparisonBody bounds each body a comparison carries (the joiner's
// --comparison.body-limit): with MaxShadows + 2 bodies at this size, the largest valid
// comparison still fits a Kafka record.
const MaxComparisonBody = 8 << 10

// DefaultLimits returns the limits every service applies unless configured otherwise. They
// keep every record the services derive from valid inputs under Kafka's default 1 MiB
// record limit: a comparison with MaxShadows shadows, each at every limit and with bodies of
// MaxComparisonBody, encodes to about 700 KiB (TestLimitsBoundTheComparison), so nothing
// valid is too large to forward.
func DefaultLimits() Limits {
	return Limits{
		MaxID:      256,
		MaxName:    256,
		MaxMessage: 4096,
		MaxVector:  1024,
		MaxShadows: 32,
		MaxFuture:  5 * time.Minute,
		MaxLatency: time.Hour,
	}
}

// earliest is the oldest event time accepted: anything before it is a zero or garbage clock.
var earliest = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// checker collects the problems of one record.
type checker struct {
	l    Limits
	now  time.Time
	errs []error
}

func (c *checker) bad(field, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)})
}

func (c *checker) err() error { return errors.Join(c.errs...) }

// text checks a name-like string: at most max bytes of valid UTF-8 without control characters.
func (c *checker) text(field, s string, max int, required bool) {
	switch {
	case s == "":
		if required {
			c.bad(field, "empty")
		}
	case len(s) > max:
		c.bad(field, "%d bytes, limit %d", len(s), max)
	case !utf8.ValidString(s):
		c.bad(field, "not valid UTF-8")
	case strings.IndexFunc(s, isControl) >= 0:
		c.bad(field, "contains a control character")
	}
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// ValidID reports whether id may serve as a request id under l: non-empty, at most MaxID bytes
// of UTF-8 without control characters (it becomes a Kafka key, a Postgres key and a header).
func (l Limits) ValidID(id string) error {
	c := checker{l: l}
	c.text("request_id", id, l.MaxID, true)
	return c.err()
}

func (c *checker) eventTime(field string, t time.Time, required bool) {
	// The zero time travels as 0 µs since the epoch: both mean "not set".
	unset := t.IsZero() || t.UnixMicro() == 0
	switch {
	case unset || t.Before(earliest):
		if required || !unset {
			c.bad(field, "missing or before %s", earliest.Format("2006-01-02"))
		}
	case !c.now.IsZero() && t.After(c.now.Add(c.l.MaxFuture)):
		c.bad(field, "%s ahead of the receiver's clock (limit %s)", t.Sub(c.now).Round(time.Second), c.l.MaxFuture)
	}
}

func (c *checker) latency(field string, d time.Duration) {
	if d < 0 || d > c.l.MaxLatency {
		c.bad(field, "%s outside [0, %s]", d, c.l.MaxLatency)
	}
}

func (c *checker) status(field string, s int32) {
	if s < 0 || s > 999 {
		c.bad(field, "HTTP status %d outside [0, 999]", s)
	}
}

func (c *checker) prediction(field string, p Prediction) {
	switch p.Kind {
	case PredictionNone, PredictionNumber:
	case PredictionLabel:
		c.text(field+".label", p.Label, c.l.MaxName, false)
	case PredictionVector:
		if len(p.Vector) > c.l.MaxVector {
			c.bad(field+".vector", "%d elements, limit %d", len(p.Vector), c.l.MaxVector)
		}
	default:
		c.bad(field, "unknown prediction kind %d", p.Kind)
	}
}

func (c *checker) error(field string, e *Error) {
	if e == nil {
		return
	}
	c.text(field+".kind", e.Kind, c.l.MaxName, true)
	if len(e.Message) > c.l.MaxMessage {
		c.bad(field+".message", "%d bytes, limit %d", len(e.Message), c.l.MaxMessage)
	}
}

func (c *checker) model(field string, m ModelRef) {
	c.text(field+".name", m.Name, c.l.MaxName, false)
	c.text(field+".version", m.Version, c.l.MaxName, false)
}

// Inference checks an inference event against l; now is the receiver's clock (zero skips the
// future check). It returns every problem, each a *FieldError wrapping ErrInvalid.
func (l Limits) Inference(ev InferenceEvent, now time.Time) error {
	c := checker{l: l, now: now}
	c.text("request_id", ev.RequestID, l.MaxID, true)
	c.text("experiment", ev.Experiment, l.MaxName, true)
	c.text("tenant", ev.Tenant, l.MaxName, false)
	c.model("model", ev.Model)
	c.eventTime("event_time", ev.EventTime, true)
	c.latency("latency", ev.Latency)
	c.status("response.status", ev.Response.Status)
	c.prediction("response.prediction", ev.Response.Prediction)
	c.error("error", ev.Error)
	return c.err()
}

// Shadow checks a shadow result against l, as Inference does.
func (l Limits) Shadow(res ShadowResult, now time.Time) error {
	c := checker{l: l, now: now}
	c.text("request_id", res.RequestID, l.MaxID, true)
	c.text("experiment", res.Experiment, l.MaxName, true)
	c.text("tenant", res.Tenant, l.MaxName, false)
	c.text("shadow", res.Shadow, l.MaxName, true)
	c.role("role", res.Role, false)
	c.text("run_id", res.RunID, l.MaxName, false)
	c.model("model", res.Model)
	c.eventTime("event_time", res.EventTime, true)
	c.eventTime("called_at", res.CalledAt, false)
	c.latency("latency", res.Latency)
	c.status("response.status", res.Response.Status)
	c.prediction("response.prediction", res.Response.Prediction)
	c.error("error", res.Error)
	return c.err()
}

// Label checks a label event against l, as Inference does.
func (l Limits) Label(lab LabelEvent, now time.Time) error {
	c := checker{l: l, now: now}
	c.text("request_id", lab.RequestID, l.MaxID, true)
	c.text("experiment", lab.Experiment, l.MaxName, true)
	c.text("tenant", lab.Tenant, l.MaxName, false)
	c.text("source", lab.Source, l.MaxName, false)
	c.eventTime("event_time", lab.EventTime, true)
	if lab.Value.Kind == PredictionNone {
		c.bad("value", "empty")
	}
	c.prediction("value", lab.Value)
	return c.err()
}

// Comparison checks a final or labeled comparison against l, as Inference does: known status,
// unique shadow names, and every outcome's names, latency and prediction within limits.
func (l Limits) Comparison(cmp Comparison, now time.Time) error {
	c := checker{l: l, now: now}
	c.text("request_id", cmp.RequestID, l.MaxID, true)
	c.text("experiment", cmp.Experiment, l.MaxName, true)
	c.text("tenant", cmp.Tenant, l.MaxName, false)
	c.eventTime("event_time", cmp.EventTime, true)
	c.body("request_body", cmp.RequestBody)
	if len(cmp.Segments) > MaxSegments {
		c.bad("segments", "%d segment keys, limit %d", len(cmp.Segments), MaxSegments)
	}
	for i, s := range cmp.Segments {
		c.text(fmt.Sprintf("segments[%d].key", i), s.Key, l.MaxName, true)
		c.text(fmt.Sprintf("segments[%d].value", i), s.Value, MaxSegmentValue, true)
	}
	switch cmp.Status {
	case StatusComplete, StatusShadowMissing, StatusChampionMissing, StatusShadowError:
	default:
		c.bad("status", "unknown status (%d bytes)", len(cmp.Status))
	}
	if cmp.Champion != nil {
		c.outcome("champion", *cmp.Champion, true)
	}
	if len(cmp.Shadows) > l.MaxShadows {
		c.bad("shadows", "%d shadows, limit %d", len(cmp.Shadows), l.MaxShadows)
	} else {
		seen := make(map[string]bool, len(cmp.Shadows))
		for i, s := range cmp.Shadows {
			field := fmt.Sprintf("shadows[%d]", i)
			c.outcome(field, s, false)
			if seen[s.Name] {
				c.bad(field+".name", "appears twice")
			}
			seen[s.Name] = true
		}
	}
	if cmp.Label != nil {
		c.prediction("label.value", cmp.Label.Value)
		c.text("label.source", cmp.Label.Source, l.MaxName, false)
		c.eventTime("label.event_time", cmp.Label.EventTime, false)
	}
	return c.err()
}

// body refuses a comparison body longer than MaxComparisonBody.
func (c *checker) body(field string, b []byte) {
	if len(b) > MaxComparisonBody {
		c.bad(field, "%d bytes, limit %d", len(b), MaxComparisonBody)
	}
}

func (c *checker) outcome(field string, o Outcome, champion bool) {
	c.body(field+".body", o.Body)
	c.text(field+".name", o.Name, c.l.MaxName, !champion)
	c.text(field+".version", o.Version, c.l.MaxName, false)
	if champion {
		if o.Role != "" && o.Role != RoleChampion {
			c.bad(field+".role", "a champion's role must be %q", RoleChampion)
		}
	} else {
		c.role(field+".role", o.Role, false)
	}
	c.status(field+".status", o.Status)
	c.latency(field+".latency", o.Latency)
	c.prediction(field+".prediction", o.Prediction)
	c.error(field+".error", o.Error)
}

func (c *checker) role(field, role string, required bool) {
	switch role {
	case RoleCandidate, RoleNoiseBaseline:
	case "":
		if required {
			c.bad(field, "empty")
		}
	default:
		c.bad(field, "unknown role (want %s or %s)", RoleCandidate, RoleNoiseBaseline)
	}
}
