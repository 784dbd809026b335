package app

import (
	"sync"
	"time"
)

// Pacing outcomes of a call, for metrics and results.
const (
	// PacingPaced: the call left within pacingTolerance of its due time.
	PacingPaced = "paced"
	// PacingLate: it left later than that but within the pacer's maximum delay (requests that
	// arrived while the lane's previous batch finished).
	PacingLate = "late"
	// PacingCatchUp: the request was older than the maximum delay (a backlog); the call left
	// at once, as fast as the shadow's in-flight budget allows.
	PacingCatchUp = "catch_up"
	// PacingOff: pacing is disabled (--pacing.max-delay=0).
	PacingOff = "off"
)

// pacingTolerance is how late a call may leave and still count as paced.
const pacingTolerance = 10 * time.Millisecond

// pacer schedules a lane's calls open loop: a call leaves at its request's event time plus
// the lane's delay, so the shadow sees the gaps between requests the champion saw instead of
// a burst per Kafka batch. The delay is the largest transport delay (tap linger, broker,
// fetch) of the freshest event of the last few batches, never more than maxDelay: it does
// not depend on the delay itself, so it cannot ratchet up. A request older than its event
// time plus maxDelay is a backlog and is called at once (catch-up).
type pacer struct {
	maxDelay time.Duration // 0: pacing off

	mu     sync.Mutex
	recent [16]time.Duration
	next   int
}

// observe records the transport delay of the freshest event of a batch.
func (p *pacer) observe(d time.Duration) {
	if p.maxDelay <= 0 || d > p.maxDelay {
		return // a backlog says nothing about the live transport delay
	}
	p.mu.Lock()
	p.recent[p.next%len(p.recent)] = max(d, 0)
	p.next++
	p.mu.Unlock()
}

// delay is the offset between an event's time and its call's due time.
func (p *pacer) delay() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var d time.Duration
	for _, r := range p.recent {
		d = max(d, r)
	}
	return d
}

// plan says how long to wait before calling for an event of eventTime, at now, and how the
// call will count.
func (p *pacer) plan(now, eventTime time.Time, delay time.Duration) (wait time.Duration, pacing string) {
	if p.maxDelay <= 0 {
		return 0, PacingOff
	}
	late := now.Sub(eventTime.Add(delay))
	switch {
	case late <= 0:
		return -late, PacingPaced
	case late <= pacingTolerance:
		return 0, PacingPaced
	case now.Sub(eventTime) <= p.maxDelay:
		return 0, PacingLate
	}
	return 0, PacingCatchUp
}
