package schemas

import "time"

// PredictionKind says which member of a Prediction is set.
type PredictionKind uint8

// Prediction kinds, matching the Avro union ["null", "double", "string", {"array": "double"}].
const (
	PredictionNone PredictionKind = iota
	PredictionNumber
	PredictionLabel
	PredictionVector
)

// Prediction is a model output extracted from a response: a score, a class label or a vector.
// The zero value means no prediction could be extracted.
type Prediction struct {
	Kind   PredictionKind
	Number float64
	Label  string
	Vector []float64
}

// Number returns a numeric prediction.
func Number(v float64) Prediction { return Prediction{Kind: PredictionNumber, Number: v} }

// Label returns a class-label prediction.
func Label(v string) Prediction { return Prediction{Kind: PredictionLabel, Label: v} }

// Vector returns a vector prediction.
func Vector(v []float64) Prediction { return Prediction{Kind: PredictionVector, Vector: v} }

// Equal reports whether p and o hold the same kind and value (exact float comparison).
func (p Prediction) Equal(o Prediction) bool {
	if p.Kind != o.Kind {
		return false
	}
	switch p.Kind {
	case PredictionNumber:
		return p.Number == o.Number
	case PredictionLabel:
		return p.Label == o.Label
	case PredictionVector:
		if len(p.Vector) != len(o.Vector) {
			return false
		}
		for i := range p.Vector {
			if p.Vector[i] != o.Vector[i] {
				return false
			}
		}
	}
	return true
}

// ModelRef names a model and its version.
type ModelRef struct {
	Name    string
	Version string
}

// HTTPRequest is a captured request. Headers hold allow-listed headers only.
type HTTPRequest struct {
	Method       string
	Path         string
	ContentType  string
	Headers      map[string]string
	Body         []byte
	Truncated    bool
	OriginalSize int64
}

// HTTPResponse is a captured response and the prediction extracted from it.
type HTTPResponse struct {
	Status       int32
	ContentType  string
	Body         []byte
	Truncated    bool
	OriginalSize int64
	Prediction   Prediction
}

// Error describes a failure by kind (a short machine word) and message.
type Error struct {
	Kind    string
	Message string
}

// InferenceEvent is one production request and the champion's answer (topic TopicInference).
type InferenceEvent struct {
	RequestID  string
	Experiment string
	Tenant     string
	Model      ModelRef
	EventTime  time.Time
	Request    HTTPRequest
	Response   HTTPResponse
	Latency    time.Duration // microsecond precision on the wire
	Error      *Error
}

// Shadow roles.
const (
	RoleCandidate     = "candidate"
	RoleNoiseBaseline = "noise_baseline"
	RoleChampion      = "champion"
)

// ShadowResult is one shadow model's answer to one captured request (topic TopicShadow).
type ShadowResult struct {
	RequestID  string
	Experiment string
	Tenant     string
	Shadow     string
	Role       string
	Model      ModelRef
	EventTime  time.Time // event time of the inference event this answers
	CalledAt   time.Time
	Response   HTTPResponse
	Latency    time.Duration
	Error      *Error
	RunID      string // empty for live shadowing
	// Dispatch is how the call left the invoker: DispatchPaced, DispatchLate, DispatchCatchUp
	// or DispatchOff; empty from older invokers and replays.
	Dispatch string
}

// LabelEvent is the ground truth for one request (topic TopicLabels).
type LabelEvent struct {
	RequestID  string
	Experiment string
	Tenant     string
	Value      Prediction
	EventTime  time.Time
	Source     string
}

// Comparison statuses.
const (
	StatusComplete        = "complete"
	StatusShadowMissing   = "shadow_missing"
	StatusChampionMissing = "champion_missing"
	StatusShadowError     = "shadow_error"

	// StatusPending and StatusEmitted appear only in the joiner's state changelog.
	StatusPending = "pending"
	StatusEmitted = "emitted"
)

// Outcome is one side of a comparison: the champion or one shadow.
type Outcome struct {
	Name       string
	Version    string
	Role       string
	Status     int32
	Prediction Prediction
	Latency    time.Duration
	Error      *Error
	Dispatch   string // shadows: the result's Dispatch; empty for the champion
	// Body is the response body as captured (the champion's by the tap, a shadow's by the
	// invoker), cut at the joiner's body limit; nil when not kept. BodyTruncated: it is shorter
	// than the response.
	Body          []byte
	BodyTruncated bool
}

// How a shadow call left the invoker (ShadowResult.Dispatch).
const (
	DispatchPaced   = "paced"    // at the request's arrival gap, within 10 ms
	DispatchLate    = "late"     // later than that, for a request under 1 s old
	DispatchCatchUp = "catch_up" // a backlog: called at once
	DispatchOff     = "off"      // pacing disabled
)

// LabelValue is the label attached to a labeled comparison.
type LabelValue struct {
	Value     Prediction
	EventTime time.Time
	Source    string
}

// Comparison joins the champion and shadow outcomes of one request (topic TopicComparisons).
type Comparison struct {
	RequestID  string
	Experiment string
	Tenant     string
	EventTime  time.Time
	Status     string
	Champion   *Outcome
	Shadows    []Outcome
	Label      *LabelValue
	EmittedAt  time.Time
	// RequestBody is the request body as the tap captured it (redaction applied), cut at the
	// joiner's body limit; nil when not kept. RequestTruncated: it is shorter than the request.
	RequestBody      []byte
	RequestTruncated bool
	// Segments are the request's value of each segment key its experiment declares, read by
	// the joiner from the captured request (SegmentUnknown when it could not be read).
	Segments []SegmentValue
}

// SegmentValue is one request's value of one segment key.
type SegmentValue struct {
	Key   string
	Value string
}

// SegmentUnknown is the value of a segment key that could not be read from a request (no
// such header, no such JSON field, not a number for a bucketed key): counted, never dropped.
const SegmentUnknown = "unknown"

// MaxSegments bounds the segment keys of one comparison; MaxSegmentValue the bytes of one
// value (the joiner cuts longer values).
const (
	MaxSegments     = 8
	MaxSegmentValue = 128
)
