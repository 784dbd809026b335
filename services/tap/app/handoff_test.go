package app

import (
	"sync"
	"testing"
	"time"
)

func TestHandoffDeliversInOrderInBatchesAndDrainsOnClose(t *testing.T) {
	h := newHandoff(1000, 20*time.Millisecond)
	var mu sync.Mutex
	var got []string
	batches := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.run(func(b []*finished) {
			mu.Lock()
			defer mu.Unlock()
			batches++
			for _, f := range b {
				got = append(got, f.id)
			}
		})
	}()
	var want []string
	for i := range 300 {
		id := string(rune('a'+i%26)) + time.Duration(i).String()
		want = append(want, id)
		if !h.put(&finished{id: id}) {
			t.Fatalf("put %d refused below the limit", i)
		}
		if i == 150 {
			time.Sleep(50 * time.Millisecond) // let a batch go out
		}
	}
	h.close()
	<-done
	if h.put(&finished{id: "late"}) {
		t.Fatal("put accepted after close")
	}
	if len(got) != len(want) {
		t.Fatalf("delivered %d of %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order broken at %d: %q, want %q", i, got[i], want[i])
		}
	}
	// 300 puts in well under the gather time, twice: a handful of batches, not one per put.
	if batches < 2 || batches > 4 {
		t.Fatalf("%d batches for two bursts, want 2-4", batches)
	}
}

func TestHandoffRefusesBeyondLimitWithoutBlocking(t *testing.T) {
	h := newHandoff(3, time.Hour)
	for i := range 3 {
		if !h.put(&finished{}) {
			t.Fatalf("put %d refused", i)
		}
	}
	if h.put(&finished{}) {
		t.Fatal("put beyond the limit accepted")
	}
	// close hands over what was queued without waiting for the gather time.
	n := 0
	done := make(chan struct{})
	go func() { defer close(done); h.run(func(b []*finished) { n += len(b) }) }()
	h.close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("run did not return after close")
	}
	if n != 3 {
		t.Fatalf("drained %d, want 3", n)
	}
}
