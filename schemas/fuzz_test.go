package schemas

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// seedGolden adds every golden vector and a few framing edge cases to the fuzz corpus.
func seedGolden(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.bin"))
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xC3, 0x01})
	f.Add([]byte{0, 0, 0, 0, 1})
}

// fuzzDecode checks that Decode never panics, and that whatever it accepts re-encodes and
// decodes to the same value.
func fuzzDecode[T any](f *testing.F, pick func(*Codecs) *Codec[T]) {
	seedGolden(f)
	cs, err := NewCodecs()
	if err != nil {
		f.Fatal(err)
	}
	c := pick(cs)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := c.Decode(context.Background(), b)
		if err != nil {
			return
		}
		again, err := c.Encode(nil, v)
		if err != nil {
			t.Fatalf("decoded value does not re-encode: %v", err)
		}
		if _, err := c.Decode(context.Background(), again); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
	})
}

func FuzzDecodeInferenceEvent(f *testing.F) {
	fuzzDecode(f, func(cs *Codecs) *Codec[InferenceEvent] { return cs.Inference })
}

func FuzzDecodeShadowResult(f *testing.F) {
	fuzzDecode(f, func(cs *Codecs) *Codec[ShadowResult] { return cs.Shadow })
}

func FuzzDecodeLabel(f *testing.F) {
	fuzzDecode(f, func(cs *Codecs) *Codec[LabelEvent] { return cs.Label })
}

func FuzzDecodeComparison(f *testing.F) {
	fuzzDecode(f, func(cs *Codecs) *Codec[Comparison] { return cs.Comparison })
}

func FuzzCheckBackward(f *testing.F) {
	for _, name := range []string{SchemaInferenceEvent, SchemaComparison} {
		s, err := SchemaText(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s, s)
	}
	f.Fuzz(func(_ *testing.T, reader, writer string) {
		_ = CheckBackward(reader, writer) // must not panic or loop
	})
}
