package schemas

import (
	"bytes"
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// randomEvent builds an InferenceEvent exercising every union branch and optional field.
func randomEvent(r *rand.Rand) InferenceEvent {
	str := func() string {
		b := make([]byte, r.IntN(40))
		for i := range b {
			b[i] = byte(32 + r.IntN(95))
		}
		return string(b)
	}
	var pred Prediction
	switch r.IntN(4) {
	case 1:
		pred = Number(r.NormFloat64() * math.Pow(10, float64(r.IntN(20)-10)))
	case 2:
		pred = Label(str())
	case 3:
		v := make([]float64, r.IntN(5))
		for i := range v {
			v[i] = r.Float64()
		}
		pred = Vector(v)
	}
	ev := InferenceEvent{
		RequestID: str(), Experiment: str(), Tenant: str(),
		Model:     ModelRef{Name: str(), Version: str()},
		EventTime: time.UnixMicro(r.Int64N(4e15) - 1e15).UTC(),
		Request: HTTPRequest{
			Method: str(), Path: str(), ContentType: str(), Truncated: r.IntN(2) == 0,
			OriginalSize: r.Int64N(1 << 40), Body: []byte(str()),
		},
		Response: HTTPResponse{
			Status: int32(r.IntN(600)) - 50, ContentType: str(), Body: []byte(str()),
			Truncated: r.IntN(2) == 0, OriginalSize: r.Int64N(1 << 30), Prediction: pred,
		},
		Latency: time.Duration(r.Int64N(1e12)) * time.Microsecond,
	}
	if r.IntN(2) == 0 {
		ev.Request.Headers = map[string]string{str(): str()}
	}
	if r.IntN(2) == 0 {
		ev.Error = &Error{Kind: str(), Message: str()}
	}
	if len(ev.Request.Body) == 0 {
		ev.Request.Body = nil
	}
	if len(ev.Response.Body) == 0 {
		ev.Response.Body = nil
	}
	return ev
}

// TestFastEncoderMatchesGoavro encodes random events with the hand-written encoder and with
// goavro: the bytes must be identical (events carry at most one header, since goavro writes
// map entries in random order).
func TestFastEncoderMatchesGoavro(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		ev := randomEvent(r)
		fast, err := cs.Inference.Encode(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := cs.Inference.current.BinaryFromNative(cs.Inference.soe[:], inferenceToNative(ev))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, slow) {
			t.Fatalf("event %d: fast and goavro encodings differ\nfast %x\nslow %x\n%+v", i, fast, slow, ev)
		}
		back, err := cs.Inference.Decode(context.Background(), fast)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, ev) {
			t.Fatalf("event %d changed in a round trip:\n got %+v\nwant %+v", i, back, ev)
		}
	}
}

func TestFastEncoderSortsHeaders(t *testing.T) {
	cs, _ := NewCodecs()
	ev := InferenceEvent{RequestID: "r", Request: HTTPRequest{Headers: map[string]string{"b": "2", "a": "1", "c": "3"}}}
	first, _ := cs.Inference.Encode(nil, ev)
	for range 20 {
		again, _ := cs.Inference.Encode(nil, ev)
		if !bytes.Equal(first, again) {
			t.Fatal("encoding of a map is not deterministic")
		}
	}
	back, err := cs.Inference.Decode(context.Background(), first)
	if err != nil || !reflect.DeepEqual(back.Request.Headers, ev.Request.Headers) {
		t.Fatalf("headers %v, %v", back.Request.Headers, err)
	}
}

// goavroInference decodes with goavro only, for equivalence checks.
func goavroInference(cs *Codecs, b []byte) (InferenceEvent, error) {
	native, rest, err := cs.Inference.current.NativeFromBinary(b[soeHeaderLen:])
	if err != nil {
		return InferenceEvent{}, err
	}
	if len(rest) > 0 {
		return InferenceEvent{}, ErrMalformed
	}
	return inferenceFromNative(native.(map[string]any))
}

// TestFastDecoderMatchesGoavro decodes random events with both decoders.
func TestFastDecoderMatchesGoavro(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 5000 {
		ev := randomEvent(r)
		b, err := cs.Inference.Encode(nil, ev)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := cs.Inference.Decode(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := goavroInference(cs, b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("event %d: decoders disagree\nfast %+v\nslow %+v", i, fast, slow)
		}
	}
}

// FuzzFastDecodeMatchesGoavro: on any input the hand-written decoder and goavro agree on
// accepting it and on the value.
func FuzzFastDecodeMatchesGoavro(f *testing.F) {
	seedGolden(f)
	cs, err := NewCodecs()
	if err != nil {
		f.Fatal(err)
	}
	r := rand.New(rand.NewPCG(5, 6))
	for range 20 {
		b, _ := cs.Inference.Encode(nil, randomEvent(r))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < soeHeaderLen || b[0] != soeMagic0 || b[1] != soeMagic1 {
			return
		}
		copy(b[2:soeHeaderLen], cs.Inference.soe[2:]) // always the current schema
		fast, ferr := cs.Inference.Decode(context.Background(), b)
		slow, serr := goavroInference(cs, b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("fast err %v, goavro err %v", ferr, serr)
		}
		if ferr == nil && !reflect.DeepEqual(fast, slow) {
			t.Fatalf("decoders disagree\nfast %+v\nslow %+v", fast, slow)
		}
	})
}

// The fast decoder must really be the one in use for the current schema: an earlier version
// once replaced the current codec by an equal copy, silently disabling it.
func TestFastDecoderIsUsed(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cs.Inference.Encode(nil, InferenceEvent{RequestID: "r"})
	w, _, err := cs.Inference.writer(context.Background(), b)
	if err != nil || w != cs.Inference.current {
		t.Fatalf("writer codec for the current fingerprint is not the current codec (err %v)", err)
	}
	allocs := testing.AllocsPerRun(100, func() { _, _ = cs.Inference.Decode(context.Background(), b) })
	if allocs > 10 {
		t.Fatalf("decode made %.0f allocations: the goavro path, not the fast one", allocs)
	}
}
