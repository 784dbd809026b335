package schemas

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// Hand-written Avro binary decoders for the current schemas' hot paths (the invoker and the
// joiner decode every event). They accept exactly what goavro accepts for the same writer
// schema and build the same values; fast_test.go and FuzzFastDecodeMatchesGoavro prove it.
// Data written with an older schema version still goes through goavro.

var errShort = errors.New("short buffer")

type reader struct {
	b   []byte
	err error
}

// varint reads a base-128 varint the way goavro does: any length, bits past 64 dropped.
func (r *reader) varint() uint64 {
	if r.err != nil {
		return 0
	}
	var v uint64
	var shift uint
	for i, c := range r.b {
		v |= uint64(c&0x7f) << shift
		if c&0x80 == 0 {
			r.b = r.b[i+1:]
			return v
		}
		shift += 7
	}
	r.fail(errShort)
	return 0
}

func (r *reader) long() int64 {
	v := r.varint()
	return int64(v>>1) ^ -int64(v&1)
}

// int32 decodes an Avro int as goavro does (zigzag of the low bits, no range error).
func (r *reader) int32() int32 {
	v := int(r.varint())
	return int32(v>>1) ^ -int32(v&1)
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
}

func (r *reader) bytes() []byte {
	n := r.long()
	if r.err != nil {
		return nil
	}
	if n < 0 || n > int64(len(r.b)) {
		r.fail(errShort)
		return nil
	}
	out := r.b[:n:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) str() string { return string(r.bytes()) }

func (r *reader) boolean() bool {
	if r.err != nil {
		return false
	}
	if len(r.b) < 1 {
		r.fail(errShort)
		return false
	}
	c := r.b[0]
	r.b = r.b[1:]
	if c > 1 {
		r.fail(errors.New("bad boolean"))
	}
	return c == 1
}

func (r *reader) double() float64 {
	if r.err != nil {
		return 0
	}
	if len(r.b) < 8 {
		r.fail(errShort)
		return 0
	}
	v := math.Float64frombits(binary.LittleEndian.Uint64(r.b))
	r.b = r.b[8:]
	return v
}

// blocks reads an Avro array or map: item is called once per item.
func (r *reader) blocks(item func()) {
	for r.err == nil {
		n := r.long()
		if n == 0 || r.err != nil {
			return
		}
		if n < 0 {
			if n == math.MinInt64 {
				r.fail(errors.New("bad block count"))
				return
			}
			n = -n
			_ = r.long() // block size in bytes
		}
		if n > int64(len(r.b))+1 {
			r.fail(errShort)
			return
		}
		for i := int64(0); i < n && r.err == nil; i++ {
			item()
		}
	}
}

func (r *reader) prediction() Prediction {
	switch r.long() {
	case 0:
		return Prediction{}
	case 1:
		return Number(r.double())
	case 2:
		return Label(r.str())
	case 3:
		v := []float64{}
		r.blocks(func() { v = append(v, r.double()) })
		return Vector(v)
	}
	r.fail(errors.New("bad union branch"))
	return Prediction{}
}

func (r *reader) errorValue() *Error {
	switch r.long() {
	case 0:
		return nil
	case 1:
		return &Error{Kind: r.str(), Message: r.str()}
	}
	r.fail(errors.New("bad union branch"))
	return nil
}

func (r *reader) micros() time.Time { return time.UnixMicro(r.long()).UTC() }

func nilIfEmpty(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return append([]byte(nil), b...)
}

func (r *reader) response() HTTPResponse {
	return HTTPResponse{
		Status: r.int32(), ContentType: r.str(), Body: nilIfEmpty(r.bytes()),
		Truncated: r.boolean(), OriginalSize: r.long(), Prediction: r.prediction(),
	}
}

func readInferenceEvent(b []byte) (InferenceEvent, error) {
	r := &reader{b: b}
	var e InferenceEvent
	e.RequestID, e.Experiment, e.Tenant = r.str(), r.str(), r.str()
	e.Model = ModelRef{Name: r.str(), Version: r.str()}
	e.EventTime = r.micros()
	e.Request.Method, e.Request.Path, e.Request.ContentType = r.str(), r.str(), r.str()
	r.blocks(func() {
		k, v := r.str(), r.str()
		if e.Request.Headers == nil {
			e.Request.Headers = map[string]string{}
		}
		e.Request.Headers[k] = v
	})
	e.Request.Body = nilIfEmpty(r.bytes())
	e.Request.Truncated = r.boolean()
	e.Request.OriginalSize = r.long()
	e.Response = r.response()
	e.Latency = time.Duration(r.long()) * time.Microsecond
	e.Error = r.errorValue()
	if r.err == nil && len(r.b) > 0 {
		r.err = errors.New("trailing bytes")
	}
	return e, r.err
}

func (r *reader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.err = errors.New("trailing bytes")
	}
	return r.err
}

func readShadowResult(b []byte) (ShadowResult, error) {
	r := &reader{b: b}
	var s ShadowResult
	s.RequestID, s.Experiment, s.Tenant, s.Shadow, s.Role = r.str(), r.str(), r.str(), r.str(), r.str()
	s.Model = ModelRef{Name: r.str(), Version: r.str()}
	s.EventTime = r.micros()
	s.CalledAt = r.micros()
	s.Response = r.response()
	s.Latency = time.Duration(r.long()) * time.Microsecond
	s.Error = r.errorValue()
	s.RunID = r.str()
	s.Dispatch = r.str()
	return s, r.end()
}

func readLabelEvent(b []byte) (LabelEvent, error) {
	r := &reader{b: b}
	var l LabelEvent
	l.RequestID, l.Experiment, l.Tenant = r.str(), r.str(), r.str()
	l.Value = r.prediction()
	l.EventTime = r.micros()
	l.Source = r.str()
	return l, r.end()
}

func (r *reader) outcome() Outcome {
	var o Outcome
	o.Name, o.Version, o.Role = r.str(), r.str(), r.str()
	o.Status = r.int32()
	o.Prediction = r.prediction()
	o.Latency = time.Duration(r.long()) * time.Microsecond
	o.Error = r.errorValue()
	o.Dispatch = r.str()
	o.Body = nilIfEmpty(r.bytes())
	o.BodyTruncated = r.boolean()
	return o
}

func readComparison(b []byte) (Comparison, error) {
	r := &reader{b: b}
	var c Comparison
	c.RequestID, c.Experiment, c.Tenant = r.str(), r.str(), r.str()
	c.EventTime = r.micros()
	c.Status = r.str()
	switch r.long() {
	case 0:
	case 1:
		o := r.outcome()
		c.Champion = &o
	default:
		r.fail(errors.New("bad union branch"))
	}
	r.blocks(func() { c.Shadows = append(c.Shadows, r.outcome()) })
	switch r.long() {
	case 0:
	case 1:
		c.Label = &LabelValue{Value: r.prediction(), EventTime: r.micros(), Source: r.str()}
	default:
		r.fail(errors.New("bad union branch"))
	}
	c.EmittedAt = r.micros()
	c.RequestBody = nilIfEmpty(r.bytes())
	c.RequestTruncated = r.boolean()
	r.blocks(func() { c.Segments = append(c.Segments, SegmentValue{Key: r.str(), Value: r.str()}) })
	return c, r.end()
}
