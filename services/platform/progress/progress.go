// Package progress tells whether a service is making progress: a Tracker is told when a unit
// of work (a batch, a Postgres apply) starts and when one completes, and its Check, registered
// as a readiness check, fails once work has been waiting longer than the stall limit without a
// completion. A service that retries a failing write forever, or whose batches are refused
// (fenced) one after another, so turns unready instead of reporting ready while stuck.
package progress

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Tracker records the oldest unfinished work. It is safe for concurrent use.
type Tracker struct {
	limit time.Duration
	now   func() time.Time

	mu      sync.Mutex
	waiting time.Time // when the oldest unfinished work began; zero when none is waiting
	lastErr string
}

// New returns a tracker that reports a stall after limit; now is the clock (time.Now).
func New(limit time.Duration, now func() time.Time) *Tracker {
	return &Tracker{limit: limit, now: now}
}

// Begin records that work started; the oldest start counts until Done.
func (t *Tracker) Begin() {
	t.mu.Lock()
	if t.waiting.IsZero() {
		t.waiting = t.now()
	}
	t.mu.Unlock()
}

// Done records that work completed: nothing is waiting any more.
func (t *Tracker) Done() {
	t.mu.Lock()
	t.waiting, t.lastErr = time.Time{}, ""
	t.mu.Unlock()
}

// Failed records why the waiting work did not complete (reported by Check); the work stays
// waiting.
func (t *Tracker) Failed(err error) {
	t.mu.Lock()
	if t.waiting.IsZero() {
		t.waiting = t.now()
	}
	if err != nil {
		t.lastErr = err.Error()
	}
	t.mu.Unlock()
}

// Stalled returns how long work has waited, when that is longer than the limit.
func (t *Tracker) Stalled() (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.waiting.IsZero() {
		return 0, false
	}
	d := t.now().Sub(t.waiting)
	return d, d > t.limit
}

// Check fails while work is stalled; register it with server.AddCheck.
func (t *Tracker) Check(context.Context) error {
	d, stalled := t.Stalled()
	if !stalled {
		return nil
	}
	t.mu.Lock()
	why := t.lastErr
	t.mu.Unlock()
	if why == "" {
		return fmt.Errorf("no progress for %s", d.Round(time.Second))
	}
	return fmt.Errorf("no progress for %s: %s", d.Round(time.Second), why)
}
