package schemas

import (
	"encoding/binary"
	"math"
	"slices"
	"time"
)

// Hand-written Avro binary encoders for the hot paths (every captured request is encoded once).
// They write exactly what goavro writes for the same value (map entries sorted by key, which
// goavro leaves in Go's random map order); fast_test.go proves the equivalence, and the golden
// vectors pin both.

func appendLong(b []byte, v int64) []byte {
	return binary.AppendUvarint(b, uint64((v<<1)^(v>>63)))
}

func appendString(b []byte, s string) []byte {
	return append(appendLong(b, int64(len(s))), s...)
}

func appendBytes(b []byte, p []byte) []byte {
	return append(appendLong(b, int64(len(p))), p...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendDouble(b []byte, f float64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
}

func appendMicros(b []byte, t time.Time) []byte {
	return appendLong(b, micros(t).UnixMicro())
}

// appendPrediction writes the union ["null","double","string",{"array":"double"}].
func appendPrediction(b []byte, p Prediction) []byte {
	switch p.Kind {
	case PredictionNumber:
		return appendDouble(appendLong(b, 1), p.Number)
	case PredictionLabel:
		return appendString(appendLong(b, 2), p.Label)
	case PredictionVector:
		b = appendLong(b, 3)
		if len(p.Vector) > 0 {
			b = appendLong(b, int64(len(p.Vector)))
			for _, v := range p.Vector {
				b = appendDouble(b, v)
			}
		}
		return appendLong(b, 0)
	}
	return appendLong(b, 0)
}

func appendError(b []byte, e *Error) []byte {
	if e == nil {
		return appendLong(b, 0)
	}
	return appendString(appendString(appendLong(b, 1), e.Kind), e.Message)
}

func appendResponse(b []byte, r HTTPResponse) []byte {
	b = appendLong(b, int64(r.Status))
	b = appendString(b, r.ContentType)
	b = appendBytes(b, r.Body)
	b = appendBool(b, r.Truncated)
	b = appendLong(b, r.OriginalSize)
	return appendPrediction(b, r.Prediction)
}

func appendInferenceEvent(b []byte, e InferenceEvent) []byte {
	b = appendString(b, e.RequestID)
	b = appendString(b, e.Experiment)
	b = appendString(b, e.Tenant)
	b = appendString(b, e.Model.Name)
	b = appendString(b, e.Model.Version)
	b = appendMicros(b, e.EventTime)
	b = appendString(b, e.Request.Method)
	b = appendString(b, e.Request.Path)
	b = appendString(b, e.Request.ContentType)
	if n := len(e.Request.Headers); n > 0 {
		keys := make([]string, 0, n)
		for k := range e.Request.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = appendLong(b, int64(n))
		for _, k := range keys {
			b = appendString(appendString(b, k), e.Request.Headers[k])
		}
	}
	b = appendLong(b, 0)
	b = appendBytes(b, e.Request.Body)
	b = appendBool(b, e.Request.Truncated)
	b = appendLong(b, e.Request.OriginalSize)
	b = appendResponse(b, e.Response)
	b = appendLong(b, e.Latency.Microseconds())
	return appendError(b, e.Error)
}

func appendShadowResult(b []byte, s ShadowResult) []byte {
	b = appendString(b, s.RequestID)
	b = appendString(b, s.Experiment)
	b = appendString(b, s.Tenant)
	b = appendString(b, s.Shadow)
	b = appendString(b, s.Role)
	b = appendString(b, s.Model.Name)
	b = appendString(b, s.Model.Version)
	b = appendMicros(b, s.EventTime)
	b = appendMicros(b, s.CalledAt)
	b = appendResponse(b, s.Response)
	b = appendLong(b, s.Latency.Microseconds())
	b = appendError(b, s.Error)
	b = appendString(b, s.RunID)
	return appendString(b, s.Dispatch)
}

func appendLabelEvent(b []byte, l LabelEvent) []byte {
	b = appendString(b, l.RequestID)
	b = appendString(b, l.Experiment)
	b = appendString(b, l.Tenant)
	b = appendPrediction(b, l.Value)
	b = appendMicros(b, l.EventTime)
	return appendString(b, l.Source)
}

func appendOutcome(b []byte, o Outcome) []byte {
	b = appendString(b, o.Name)
	b = appendString(b, o.Version)
	b = appendString(b, o.Role)
	b = appendLong(b, int64(o.Status))
	b = appendPrediction(b, o.Prediction)
	b = appendLong(b, o.Latency.Microseconds())
	b = appendError(b, o.Error)
	b = appendString(b, o.Dispatch)
	b = appendBytes(b, o.Body)
	return appendBool(b, o.BodyTruncated)
}

func appendComparison(b []byte, c Comparison) []byte {
	b = appendString(b, c.RequestID)
	b = appendString(b, c.Experiment)
	b = appendString(b, c.Tenant)
	b = appendMicros(b, c.EventTime)
	b = appendString(b, c.Status)
	if c.Champion == nil {
		b = appendLong(b, 0)
	} else {
		b = appendOutcome(appendLong(b, 1), *c.Champion)
	}
	if len(c.Shadows) > 0 {
		b = appendLong(b, int64(len(c.Shadows)))
		for _, s := range c.Shadows {
			b = appendOutcome(b, s)
		}
	}
	b = appendLong(b, 0)
	if c.Label == nil {
		b = appendLong(b, 0)
	} else {
		b = appendLong(b, 1)
		b = appendPrediction(b, c.Label.Value)
		b = appendMicros(b, c.Label.EventTime)
		b = appendString(b, c.Label.Source)
	}
	b = appendMicros(b, c.EmittedAt)
	b = appendBytes(b, c.RequestBody)
	b = appendBool(b, c.RequestTruncated)
	if len(c.Segments) > 0 {
		b = appendLong(b, int64(len(c.Segments)))
		for _, s := range c.Segments {
			b = appendString(appendString(b, s.Key), s.Value)
		}
	}
	return appendLong(b, 0)
}
