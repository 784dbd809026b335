package schemas

import (
	"fmt"
	"time"

	"github.com/linkedin/goavro/v2"
)

// This file converts between the typed values and goavro's native form. Decoding is tolerant
// of absent fields (older writers): they take their zero value, which equals the schema default.

type fields map[string]any

func (f fields) str(k string) string {
	s, _ := f[k].(string)
	return s
}

func (f fields) bytes(k string) []byte {
	b, _ := f[k].([]byte)
	if len(b) == 0 {
		return nil
	}
	return b
}

func (f fields) i64(k string) int64 {
	switch v := f[k].(type) {
	case int64:
		return v
	case int32:
		return int64(v)
	case int:
		return int64(v)
	}
	return 0
}

func (f fields) boolean(k string) bool {
	b, _ := f[k].(bool)
	return b
}

func (f fields) time(k string) time.Time {
	switch v := f[k].(type) {
	case time.Time:
		return v.UTC()
	case int64:
		return time.UnixMicro(v).UTC()
	}
	return time.UnixMicro(0).UTC()
}

func (f fields) record(k string) fields {
	m, _ := f[k].(map[string]any)
	return m
}

// union returns the value of a ["null", T] union field, or nil.
func (f fields) union(k string) fields {
	m, ok := f[k].(map[string]any)
	if !ok {
		return nil
	}
	for _, v := range m {
		r, _ := v.(map[string]any)
		return r
	}
	return nil
}

func micros(t time.Time) time.Time {
	if t.IsZero() {
		return time.UnixMicro(0).UTC()
	}
	return t.UTC().Truncate(time.Microsecond)
}

func predictionToNative(p Prediction) any {
	switch p.Kind {
	case PredictionNumber:
		return goavro.Union("double", p.Number)
	case PredictionLabel:
		return goavro.Union("string", p.Label)
	case PredictionVector:
		arr := make([]any, len(p.Vector))
		for i, v := range p.Vector {
			arr[i] = v
		}
		return goavro.Union("array", arr)
	}
	return nil
}

func predictionFromNative(v any) (Prediction, error) {
	m, ok := v.(map[string]any)
	if !ok || len(m) == 0 {
		return Prediction{}, nil
	}
	for branch, val := range m {
		switch branch {
		case "double":
			f, _ := val.(float64)
			return Number(f), nil
		case "string":
			s, _ := val.(string)
			return Label(s), nil
		case "array":
			arr, _ := val.([]any)
			out := make([]float64, len(arr))
			for i, x := range arr {
				out[i], _ = x.(float64)
			}
			return Vector(out), nil
		default:
			return Prediction{}, fmt.Errorf("prediction: unknown union branch %q", branch)
		}
	}
	return Prediction{}, nil
}

func modelToNative(m ModelRef) map[string]any {
	return map[string]any{"name": m.Name, "version": m.Version}
}

func modelFromNative(f fields) ModelRef {
	return ModelRef{Name: f.str("name"), Version: f.str("version")}
}

func errorToNative(e *Error, name string) any {
	if e == nil {
		return nil
	}
	return goavro.Union(name, map[string]any{"kind": e.Kind, "message": e.Message})
}

func errorFromNative(f fields) *Error {
	if f == nil {
		return nil
	}
	return &Error{Kind: f.str("kind"), Message: f.str("message")}
}

func responseToNative(r HTTPResponse) map[string]any {
	return map[string]any{
		"status":        r.Status,
		"content_type":  r.ContentType,
		"body":          nonNilBytes(r.Body),
		"truncated":     r.Truncated,
		"original_size": r.OriginalSize,
		"prediction":    predictionToNative(r.Prediction),
	}
}

func responseFromNative(f fields) (HTTPResponse, error) {
	p, err := predictionFromNative(f["prediction"])
	return HTTPResponse{
		Status:       int32(f.i64("status")),
		ContentType:  f.str("content_type"),
		Body:         f.bytes("body"),
		Truncated:    f.boolean("truncated"),
		OriginalSize: f.i64("original_size"),
		Prediction:   p,
	}, err
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func inferenceToNative(e InferenceEvent) map[string]any {
	headers := make(map[string]any, len(e.Request.Headers))
	for k, v := range e.Request.Headers {
		headers[k] = v
	}
	return map[string]any{
		"request_id": e.RequestID,
		"experiment": e.Experiment,
		"tenant":     e.Tenant,
		"model":      modelToNative(e.Model),
		"event_time": micros(e.EventTime),
		"request": map[string]any{
			"method":        e.Request.Method,
			"path":          e.Request.Path,
			"content_type":  e.Request.ContentType,
			"headers":       headers,
			"body":          nonNilBytes(e.Request.Body),
			"truncated":     e.Request.Truncated,
			"original_size": e.Request.OriginalSize,
		},
		"response":   responseToNative(e.Response),
		"latency_us": e.Latency.Microseconds(),
		"error":      errorToNative(e.Error, "ml.understudy.v1.Error"),
	}
}

func inferenceFromNative(f fields) (InferenceEvent, error) {
	req := f.record("request")
	var headers map[string]string
	if hm, ok := req["headers"].(map[string]any); ok && len(hm) > 0 {
		headers = make(map[string]string, len(hm))
		for k, v := range hm {
			headers[k], _ = v.(string)
		}
	}
	resp, err := responseFromNative(f.record("response"))
	if err != nil {
		return InferenceEvent{}, fmt.Errorf("response: %w", err)
	}
	return InferenceEvent{
		RequestID:  f.str("request_id"),
		Experiment: f.str("experiment"),
		Tenant:     f.str("tenant"),
		Model:      modelFromNative(f.record("model")),
		EventTime:  f.time("event_time"),
		Request: HTTPRequest{
			Method:       req.str("method"),
			Path:         req.str("path"),
			ContentType:  req.str("content_type"),
			Headers:      headers,
			Body:         req.bytes("body"),
			Truncated:    req.boolean("truncated"),
			OriginalSize: req.i64("original_size"),
		},
		Response: resp,
		Latency:  time.Duration(f.i64("latency_us")) * time.Microsecond,
		Error:    errorFromNative(f.union("error")),
	}, nil
}

func shadowToNative(r ShadowResult) map[string]any {
	return map[string]any{
		"request_id": r.RequestID,
		"experiment": r.Experiment,
		"tenant":     r.Tenant,
		"shadow":     r.Shadow,
		"role":       r.Role,
		"model":      modelToNative(r.Model),
		"event_time": micros(r.EventTime),
		"called_at":  micros(r.CalledAt),
		"response":   responseToNative(r.Response),
		"latency_us": r.Latency.Microseconds(),
		"error":      errorToNative(r.Error, "ml.understudy.v1.Error"),
		"run_id":     r.RunID,
		"dispatch":   r.Dispatch,
	}
}

func shadowFromNative(f fields) (ShadowResult, error) {
	resp, err := responseFromNative(f.record("response"))
	if err != nil {
		return ShadowResult{}, fmt.Errorf("response: %w", err)
	}
	return ShadowResult{
		RequestID:  f.str("request_id"),
		Experiment: f.str("experiment"),
		Tenant:     f.str("tenant"),
		Shadow:     f.str("shadow"),
		Role:       f.str("role"),
		Model:      modelFromNative(f.record("model")),
		EventTime:  f.time("event_time"),
		CalledAt:   f.time("called_at"),
		Response:   resp,
		Latency:    time.Duration(f.i64("latency_us")) * time.Microsecond,
		Error:      errorFromNative(f.union("error")),
		RunID:      f.str("run_id"),
		Dispatch:   f.str("dispatch"),
	}, nil
}

func labelToNative(l LabelEvent) map[string]any {
	return map[string]any{
		"request_id": l.RequestID,
		"experiment": l.Experiment,
		"tenant":     l.Tenant,
		"value":      predictionToNative(l.Value),
		"event_time": micros(l.EventTime),
		"source":     l.Source,
	}
}

func labelFromNative(f fields) (LabelEvent, error) {
	v, err := predictionFromNative(f["value"])
	return LabelEvent{
		RequestID:  f.str("request_id"),
		Experiment: f.str("experiment"),
		Tenant:     f.str("tenant"),
		Value:      v,
		EventTime:  f.time("event_time"),
		Source:     f.str("source"),
	}, err
}

func outcomeToNative(o Outcome) map[string]any {
	return map[string]any{
		"name":           o.Name,
		"version":        o.Version,
		"role":           o.Role,
		"status":         o.Status,
		"prediction":     predictionToNative(o.Prediction),
		"latency_us":     o.Latency.Microseconds(),
		"error":          errorToNative(o.Error, "ml.understudy.v1.Error"),
		"dispatch":       o.Dispatch,
		"body":           nonNilBytes(o.Body),
		"body_truncated": o.BodyTruncated,
	}
}

func outcomeFromNative(f fields) (Outcome, error) {
	p, err := predictionFromNative(f["prediction"])
	return Outcome{
		Name:          f.str("name"),
		Version:       f.str("version"),
		Role:          f.str("role"),
		Status:        int32(f.i64("status")),
		Prediction:    p,
		Latency:       time.Duration(f.i64("latency_us")) * time.Microsecond,
		Error:         errorFromNative(f.union("error")),
		Dispatch:      f.str("dispatch"),
		Body:          f.bytes("body"),
		BodyTruncated: f.boolean("body_truncated"),
	}, err
}

func comparisonToNative(c Comparison) map[string]any {
	var champion any
	if c.Champion != nil {
		champion = goavro.Union("ml.understudy.v1.Outcome", outcomeToNative(*c.Champion))
	}
	shadows := make([]any, len(c.Shadows))
	for i, s := range c.Shadows {
		shadows[i] = outcomeToNative(s)
	}
	segments := make([]any, len(c.Segments))
	for i, s := range c.Segments {
		segments[i] = map[string]any{"key": s.Key, "value": s.Value}
	}
	var label any
	if c.Label != nil {
		label = goavro.Union("ml.understudy.v1.LabelValue", map[string]any{
			"value":      predictionToNative(c.Label.Value),
			"event_time": micros(c.Label.EventTime),
			"source":     c.Label.Source,
		})
	}
	return map[string]any{
		"request_id":             c.RequestID,
		"experiment":             c.Experiment,
		"tenant":                 c.Tenant,
		"event_time":             micros(c.EventTime),
		"status":                 c.Status,
		"champion":               champion,
		"shadows":                shadows,
		"label":                  label,
		"emitted_at":             micros(c.EmittedAt),
		"request_body":           nonNilBytes(c.RequestBody),
		"request_body_truncated": c.RequestTruncated,
		"segments":               segments,
	}
}

func comparisonFromNative(f fields) (Comparison, error) {
	c := Comparison{
		RequestID:        f.str("request_id"),
		Experiment:       f.str("experiment"),
		Tenant:           f.str("tenant"),
		EventTime:        f.time("event_time"),
		Status:           f.str("status"),
		EmittedAt:        f.time("emitted_at"),
		RequestBody:      f.bytes("request_body"),
		RequestTruncated: f.boolean("request_body_truncated"),
	}
	if ch := f.union("champion"); ch != nil {
		o, err := outcomeFromNative(ch)
		if err != nil {
			return Comparison{}, fmt.Errorf("champion: %w", err)
		}
		c.Champion = &o
	}
	arr, _ := f["shadows"].([]any)
	for i, s := range arr {
		m, _ := s.(map[string]any)
		o, err := outcomeFromNative(m)
		if err != nil {
			return Comparison{}, fmt.Errorf("shadows[%d]: %w", i, err)
		}
		c.Shadows = append(c.Shadows, o)
	}
	if l := f.union("label"); l != nil {
		v, err := predictionFromNative(l["value"])
		if err != nil {
			return Comparison{}, fmt.Errorf("label: %w", err)
		}
		c.Label = &LabelValue{Value: v, EventTime: l.time("event_time"), Source: l.str("source")}
	}
	segs, _ := f["segments"].([]any)
	for _, s := range segs {
		m, _ := s.(map[string]any)
		c.Segments = append(c.Segments, SegmentValue{Key: fields(m).str("key"), Value: fields(m).str("value")})
	}
	return c, nil
}
