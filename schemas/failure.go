package schemas

// Failure kinds: one classification of a model's answer, applied the same way to the champion
// (measured at the tap) and to every shadow (measured by the invoker), so that an error rate of
// one side means what it means for the other.
const (
	FailureTransport   = "transport"    // no HTTP answer: connection refused, reset, closed
	FailureTimeout     = "timeout"      // no answer within the timeout
	FailureHTTP5xx     = "http_5xx"     // the model answered 5xx
	FailureHTTP4xx     = "http_4xx"     // the model refused the request (4xx, or another non-2xx)
	FailureBadResponse = "bad_response" // a 2xx answer with no prediction that could be read
)

// Reasons a shadow was deliberately not called: its ShadowResult carries one as its error
// kind. They are not failures of the shadow; the aggregator counts them as not shadowed, by
// reason, next to the numbers.
const (
	NotCalledOutsideSample = "outside_sample" // the request is not in the shadow's sample
	NotCalledBodyTruncated = "body_truncated" // the tap captured the request body truncated
	NotCalledShuttingDown  = "shutting_down"  // the invoker stopped before the call
	NotCalledRateLimited   = "rate_limited"   // over the shadow's rate limit
	NotCalledCircuitOpen   = "circuit_open"   // the shadow's circuit breaker is open
	NotCalledNotAllowed    = "not_allowed"    // method or path outside what the shadow may get
	// NotCalledSkipped is what invokers before December 2026 wrote for the first three.
	NotCalledSkipped = "skipped"
)

// NotCalled reports whether an error kind says the shadow was deliberately not called.
func NotCalled(kind string) bool {
	switch kind {
	case NotCalledOutsideSample, NotCalledBodyTruncated, NotCalledShuttingDown, NotCalledRateLimited,
		NotCalledCircuitOpen, NotCalledNotAllowed, NotCalledSkipped:
		return true
	}
	return false
}

// FailureKinds lists every failure kind.
var FailureKinds = []string{FailureTransport, FailureTimeout, FailureHTTP5xx, FailureHTTP4xx, FailureBadResponse}

// Failure classifies an outcome: "" when the model answered 2xx with a prediction, otherwise
// one of the Failure kinds. It reads only what both sides record (the HTTP status, the error
// kind of a call that got no answer, and whether a prediction was read), never who measured
// it. Outcomes the invoker deliberately did not call (NotCalled) are the caller's to exclude;
// Failure reports them as transport failures.
func Failure(o *Outcome) string {
	if o.Error != nil {
		switch o.Error.Kind {
		case "timeout":
			return FailureTimeout
		case "connect", "transport":
			return FailureTransport
		}
	}
	switch {
	case o.Status == 0 && o.Error == nil:
		return "" // no status recorded and no error: an answer from a producer that omits statuses
	case o.Status == 0:
		if o.Error.Kind == "bad_response" {
			return FailureBadResponse
		}
		return FailureTransport
	case o.Status >= 500:
		return FailureHTTP5xx
	case o.Status < 200 || o.Status >= 300:
		return FailureHTTP4xx
	case o.Prediction.Kind == PredictionNone || o.Error != nil:
		return FailureBadResponse
	}
	return ""
}
