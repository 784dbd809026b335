package schemas

import (
	"bytes"
	"context"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// Equivalence of the hand-written ShadowResult, Label and Comparison codecs with goavro, as
// fast_test.go does for InferenceEvent.

func randomShadow(r *rand.Rand) ShadowResult {
	ev := randomEvent(r)
	s := ShadowResult{
		RequestID: ev.RequestID, Experiment: ev.Experiment, Tenant: ev.Tenant, Shadow: ev.Model.Name, Role: ev.Request.Method,
		Model: ev.Model, EventTime: ev.EventTime, CalledAt: time.UnixMicro(r.Int64N(4e15)).UTC(),
		Response: ev.Response, Latency: ev.Latency, Error: ev.Error, RunID: ev.Request.Path, Dispatch: ev.Tenant,
	}
	return s
}

func randomLabel(r *rand.Rand) LabelEvent {
	ev := randomEvent(r)
	return LabelEvent{RequestID: ev.RequestID, Experiment: ev.Experiment, Tenant: ev.Tenant, Value: ev.Response.Prediction, EventTime: ev.EventTime, Source: ev.Request.Path}
}

func randomComparison(r *rand.Rand) Comparison {
	outcome := func() Outcome {
		ev := randomEvent(r)
		return Outcome{Name: ev.Model.Name, Version: ev.Model.Version, Role: ev.Tenant, Status: ev.Response.Status, Prediction: ev.Response.Prediction, Latency: ev.Latency, Error: ev.Error, Dispatch: ev.Request.Path}
	}
	ev := randomEvent(r)
	c := Comparison{RequestID: ev.RequestID, Experiment: ev.Experiment, Tenant: ev.Tenant, EventTime: ev.EventTime, Status: ev.Request.Method, EmittedAt: time.UnixMicro(r.Int64N(4e15)).UTC()}
	if r.IntN(3) > 0 {
		o := outcome()
		c.Champion = &o
	}
	for range r.IntN(4) {
		c.Shadows = append(c.Shadows, outcome())
	}
	if r.IntN(2) == 0 {
		l := randomLabel(r)
		c.Label = &LabelValue{Value: l.Value, EventTime: l.EventTime, Source: l.Source}
	}
	return c
}

// goavroDecode decodes the body of b with goavro only.
func goavroDecode[T any](c *Codec[T], b []byte) (T, error) {
	var zero T
	native, rest, err := c.current.NativeFromBinary(b[soeHeaderLen:])
	if err != nil {
		return zero, err
	}
	if len(rest) > 0 {
		return zero, ErrMalformed
	}
	return c.from(native.(map[string]any))
}

func checkFastCodec[T any](t *testing.T, c *Codec[T], gen func(*rand.Rand) T) {
	t.Helper()
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 3000 {
		v := gen(r)
		fast, err := c.Encode(nil, v)
		if err != nil {
			t.Fatal(err)
		}
		slow, err := c.current.BinaryFromNative(c.soe[:], c.to(v))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, slow) {
			t.Fatalf("value %d: encodings differ\nfast %x\nslow %x\n%+v", i, fast, slow, v)
		}
		dec, err := c.Decode(context.Background(), fast)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := goavroDecode(c, fast)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(dec, ref) {
			t.Fatalf("value %d: decoders disagree\nfast %+v\nslow %+v", i, dec, ref)
		}
	}
}

func TestFastShadowLabelComparisonMatchGoavro(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("shadow", func(t *testing.T) { checkFastCodec(t, cs.Shadow, randomShadow) })
	t.Run("label", func(t *testing.T) { checkFastCodec(t, cs.Label, randomLabel) })
	t.Run("comparison", func(t *testing.T) { checkFastCodec(t, cs.Comparison, randomComparison) })
}

func fuzzFastDecode[T any](f *testing.F, c *Codec[T], gen func(*rand.Rand) T) {
	seedGolden(f)
	r := rand.New(rand.NewPCG(9, 10))
	for range 20 {
		b, _ := c.Encode(nil, gen(r))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < soeHeaderLen || b[0] != soeMagic0 || b[1] != soeMagic1 {
			return
		}
		copy(b[2:soeHeaderLen], c.soe[2:])
		fast, ferr := c.Decode(context.Background(), b)
		slow, serr := goavroDecode(c, b)
		if (ferr == nil) != (serr == nil) {
			t.Fatalf("fast err %v, goavro err %v", ferr, serr)
		}
		// NaN != NaN for DeepEqual: values that encode to the same bytes are the same.
		if ferr == nil && !reflect.DeepEqual(fast, slow) && !bytes.Equal(c.fast(nil, fast), c.fast(nil, slow)) {
			t.Fatalf("decoders disagree\nfast %+v\nslow %+v", fast, slow)
		}
	})
}

func FuzzFastShadowMatchesGoavro(f *testing.F) {
	cs, _ := NewCodecs()
	fuzzFastDecode(f, cs.Shadow, randomShadow)
}

func FuzzFastLabelMatchesGoavro(f *testing.F) {
	cs, _ := NewCodecs()
	fuzzFastDecode(f, cs.Label, randomLabel)
}

func FuzzFastComparisonMatchesGoavro(f *testing.F) {
	cs, _ := NewCodecs()
	fuzzFastDecode(f, cs.Comparison, randomComparison)
}
