package app

import (
	"sync"
	"time"
)

// handoff passes finished exchanges from request handlers to the publisher in batches.
//
// A channel send per request wakes the publisher per request, and on a busy proxy each wake
// costs a futex call and a scheduler round trip on another thread: more CPU than building and
// encoding the event. Instead put appends under a mutex and wakes the publisher only when the
// batch goes from empty to non-empty; the publisher then waits gather before taking the
// whole batch, so at any rate it wakes at most 1/gather times a second (and not at all when
// idle). Events are not latency-critical: the Kafka client lingers longer than gather anyway.
//
// put never blocks: beyond limit queued exchanges it refuses, and the caller counts the drop.
type handoff struct {
	gather time.Duration
	limit  int

	mu     sync.Mutex
	batch  []*finished
	spare  []*finished // the previous batch's backing array, reused
	closed bool
	wake   chan struct{} // capacity 1: a token means "the batch is not empty"
	done   chan struct{} // closed by close
}

func newHandoff(limit int, gather time.Duration) *handoff {
	return &handoff{gather: gather, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// put queues f and reports whether it was taken: false when the queue is full or closed.
func (h *handoff) put(f *finished) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || len(h.batch) >= h.limit {
		return false
	}
	h.batch = append(h.batch, f)
	if len(h.batch) == 1 {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
	return true
}

// close makes put refuse; run returns once it has handed over what was queued before.
func (h *handoff) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.closed {
		h.closed = true
		close(h.done)
	}
}

// run calls fn with each batch, in order, until close; the slice is only valid during the call.
func (h *handoff) run(fn func([]*finished)) {
	for {
		closing := h.wait()
		h.flush(fn)
		if closing {
			return // every accepted put happened before close, so flush took it
		}
	}
}

// wait returns after the gather time that follows a wake-up, or at once when closed (true).
func (h *handoff) wait() (closing bool) {
	select {
	case <-h.wake:
	case <-h.done:
		return true
	}
	t := time.NewTimer(h.gather)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case <-h.done:
		return true
	}
}

// flush hands the current batch to fn, reusing the previous batch's array for the next one.
func (h *handoff) flush(fn func([]*finished)) {
	h.mu.Lock()
	b := h.batch
	h.batch, h.spare = h.spare[:0], nil
	h.mu.Unlock()
	if len(b) > 0 {
		fn(b)
	}
	clear(b)
	h.mu.Lock()
	h.spare = b[:0]
	h.mu.Unlock()
}
