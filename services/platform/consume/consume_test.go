package consume

import (
	"context"
	"testing"
	"time"
)

// TestDrainContext: the drain context outlives its parent by the drain and no more; one whose
// work finished (cancel called) ends at once.
func TestDrainContext(t *testing.T) {
	parent, stop := context.WithCancel(context.Background())
	dctx, cancel := drainContext(parent, 50*time.Millisecond)
	defer cancel()
	stop()
	select {
	case <-dctx.Done():
		t.Fatal("the drain context ended with its parent")
	case <-time.After(20 * time.Millisecond):
	}
	select {
	case <-dctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the drain context outlived its drain")
	}

	live, cancelLive := drainContext(context.Background(), time.Hour)
	cancelLive()
	if live.Err() == nil {
		t.Fatal("cancel did not end the drain context")
	}
}
