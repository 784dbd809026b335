package apiv1

import (
	"encoding/base64"
	"time"
	"unicode/utf8"
)

// ExamplesResponse is GET /api/v1/experiments/{experiment}/examples: the requests kept to
// explain the windows of the range, best first within each window and kind. It carries
// payloads (request and response bodies as captured, redaction applied): access to it is
// separable from the statistics endpoints.
type ExamplesResponse struct {
	Experiment string    `json:"experiment"`
	From       time.Time `json:"from"`
	To         time.Time `json:"to"`
	Examples   []Example `json:"examples"`
}

// Example kinds (the aggregator's window package says how each is chosen and scored).
const (
	ExampleDifference    = "difference"
	ExampleFlip          = "flip"
	ExampleShadowError   = "shadow_error"
	ExampleChampionError = "champion_error"
	ExampleOneRight      = "one_right"
	ExampleSample        = "sample"
)

// ExampleKinds lists every kind, in the order reports show them.
var ExampleKinds = []string{ExampleDifference, ExampleFlip, ExampleShadowError, ExampleChampionError, ExampleOneRight, ExampleSample}

// Example is one request kept for a window and kind.
type Example struct {
	Shadow    string    `json:"shadow"`
	Window    time.Time `json:"window"` // start of the base window it explains
	Kind      string    `json:"kind"`
	Score     float64   `json:"score"` // higher explains more: |difference| or, for kinds without a magnitude, a uniform hash
	RequestID string    `json:"request_id"`
	EventTime time.Time `json:"event_time"`
	Status    string    `json:"status"` // the comparison's status
	Request   Body      `json:"request"`
	Champion  Answer    `json:"champion"`
	Answer    Answer    `json:"shadow_answer"`
	Label     *Label    `json:"label,omitempty"`
}

// Answer is one model's answer to the request.
type Answer struct {
	Model     string       `json:"model"`
	Version   string       `json:"version,omitempty"`
	Status    int32        `json:"status"`
	Value     any          `json:"prediction"` // a number, a class (string), a vector (array of numbers) or null
	LatencyMS float64      `json:"latency_ms"`
	Error     *AnswerError `json:"error,omitempty"`
	Body      Body         `json:"body"`
}

// AnswerError is a failed call's error payload.
type AnswerError struct {
	Kind    string `json:"kind"`
	Message string `json:"message,omitempty"`
}

// Label is the ground truth of a labeled example.
type Label struct {
	Value     any       `json:"value"`
	EventTime time.Time `json:"event_time"`
	Source    string    `json:"source,omitempty"`
}

// Body is a captured body: Text when it is valid UTF-8, else Base64. Truncated: the body is
// longer than what was kept (cut at capture or by the joiner's body limit).
type Body struct {
	Text      string `json:"text,omitempty"`
	Base64    string `json:"base64,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
}

// NewBody returns b as a Body.
func NewBody(b []byte, truncated bool) Body {
	if utf8.Valid(b) {
		return Body{Text: string(b), Truncated: truncated}
	}
	return Body{Base64: base64.StdEncoding.EncodeToString(b), Truncated: truncated}
}

// Bytes returns the body's bytes.
func (b Body) Bytes() []byte {
	if b.Base64 != "" {
		out, err := base64.StdEncoding.DecodeString(b.Base64)
		if err == nil {
			return out
		}
	}
	return []byte(b.Text)
}
