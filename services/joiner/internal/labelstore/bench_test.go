package labelstore

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkApply applies batches of 2,500 predictions and the labels of the previous batch
// (5,000 entries per transaction), as the joiner does under load.
func BenchmarkApply(b *testing.B) {
	ctx := context.Background()
	s := startStore(&testing.T{}, 24*time.Hour)
	value := make([]byte, 300)
	t0 := time.Now()
	const per = 2500
	off := int64(0)
	b.ResetTimer()
	for i := range b.N {
		entries := make([]Entry, 0, 2*per)
		for k := range per {
			id := fmt.Sprintf("r-%d-%d", i, k)
			entries = append(entries, Entry{Kind: KindPrediction, Partition: int32(k % 4), Offset: off, RequestID: id, EventTime: t0, Value: value})
			off++
			if i > 0 {
				entries = append(entries, Entry{Kind: KindLabel, Partition: int32(k % 4), Offset: off, RequestID: fmt.Sprintf("r-%d-%d", i-1, k), EventTime: t0.Add(time.Minute), Value: value[:40]})
				off++
			}
		}
		start := time.Now()
		ready, _, err := s.Apply(ctx, entries, time.Unix(0, 0))
		if err != nil {
			b.Fatal(err)
		}
		if i > 0 && len(ready) != per {
			b.Fatalf("ready %d", len(ready))
		}
		if i%10 == 0 || i == b.N-1 {
			b.Logf("apply %d: %s for %d entries", i, time.Since(start), len(entries))
		}
	}
}
