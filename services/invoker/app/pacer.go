package app

import (
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

// Pacing outcomes of a call, for metrics and ShadowResult.Dispatch.
const (
	// PacingPaced: the call left within pacingTolerance of its due time.
	PacingPaced = schemas.DispatchPaced
	// PacingLate: it left later than that, for a request younger than catchUpAge (one that
	// arrived while the lane's previous batch finished, or was delayed in transport).
	PacingLate = schemas.DispatchLate
	// PacingCatchUp: the request was older than catchUpAge (a backlog); the call left at
	// once, as fast as the shadow's in-flight budget allows.
	PacingCatchUp = schemas.DispatchCatchUp
	// PacingOff: pacing is disabled (--pacing.delay=0).
	PacingOff = schemas.DispatchOff
)

const (
	// pacingTolerance is how late a call may leave and still count as paced.
	pacingTolerance = 10 * time.Millisecond
	// catchUpAge is the age beyond which a request is a backlog.
	catchUpAge = time.Second
)

// pacer schedules a lane's calls open loop: a call leaves a fixed delay (enough for the tap's
// linger, the broker and the fetch) after the champion answered its request (event time plus
// the champion's latency, when the tap publishes the event), so the shadow sees the gaps
// between requests the champion saw instead of a burst per Kafka batch. The delay is
// fixed on purpose: a delay learned from how old fetched events are would grow with itself,
// since waiting longer makes the next batch's events older.
type pacer struct {
	delay time.Duration // 0: pacing off
}

// plan says how long to wait, at now, before calling for an event whose champion answered at
// eventTime, and how the call counts.
func (p pacer) plan(now, eventTime time.Time) (wait time.Duration, pacing string) {
	if p.delay <= 0 {
		return 0, PacingOff
	}
	late := now.Sub(eventTime.Add(p.delay))
	switch {
	case late <= 0:
		return -late, PacingPaced
	case late <= pacingTolerance:
		return 0, PacingPaced
	case now.Sub(eventTime) <= catchUpAge:
		return 0, PacingLate
	}
	return 0, PacingCatchUp
}
