package schemas

import (
	"context"
	"testing"
)

// BenchmarkCodec measures encoding and decoding of the golden inference event (about 350
// bytes framed), the record every request produces.
func BenchmarkCodec(b *testing.B) {
	cs, err := NewCodecs()
	if err != nil {
		b.Fatal(err)
	}
	inf, _, _, _ := goldenValues()
	buf, err := cs.Inference.Encode(nil, inf)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("encode_inference_event", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		dst := make([]byte, 0, 1024)
		for b.Loop() {
			if _, err := cs.Inference.Encode(dst[:0], inf); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode_inference_event", func(b *testing.B) {
		b.SetBytes(int64(len(buf)))
		b.ReportAllocs()
		ctx := context.Background()
		for b.Loop() {
			if _, err := cs.Inference.Decode(ctx, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
