package app

import (
	"testing"
	"time"
)

func TestPacerKeepsArrivalGapsAndCatchesUpBacklogs(t *testing.T) {
	p := &pacer{maxDelay: time.Second}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// A batch polled at t0+60ms holding events of t0, t0+20ms and t0+50ms: the freshest
	// waited 10 ms in transport, so calls leave 10 ms after their event times.
	now := t0.Add(60 * time.Millisecond)
	p.observe(now.Sub(t0.Add(50 * time.Millisecond)))
	d := p.delay()
	if d != 10*time.Millisecond {
		t.Fatalf("delay %s, want 10ms", d)
	}
	if w, pacing := p.plan(now, t0.Add(50*time.Millisecond), d); w != 0 || pacing != PacingPaced {
		t.Fatalf("on-time event: wait %s, %s", w, pacing)
	}
	// The batch's first call left at t0+60ms; the next event, 20 ms later in event time, waits
	// until 20 ms after the previous due time, not for the batch.
	p2 := &pacer{maxDelay: time.Second}
	p2.observe(100 * time.Millisecond)
	if w, pacing := p2.plan(t0.Add(100*time.Millisecond), t0.Add(20*time.Millisecond), p2.delay()); w != 20*time.Millisecond || pacing != PacingPaced {
		t.Fatalf("future event: wait %s, %s; want 20ms paced", w, pacing)
	}
	if _, pacing := p2.plan(t0.Add(500*time.Millisecond), t0.Add(20*time.Millisecond), p2.delay()); pacing != PacingLate {
		t.Fatalf("an event 380 ms past due within max delay is %s, want late", pacing)
	}
	if w, pacing := p2.plan(t0.Add(5*time.Second), t0, p2.delay()); w != 0 || pacing != PacingCatchUp {
		t.Fatalf("backlog: wait %s, %s", w, pacing)
	}
	// A backlog's transport delay does not raise the live delay.
	p2.observe(3 * time.Second)
	if p2.delay() != 100*time.Millisecond {
		t.Fatalf("delay %s after a backlog batch", p2.delay())
	}
	if _, pacing := (&pacer{}).plan(t0, t0, 0); pacing != PacingOff {
		t.Fatalf("max delay 0: %s", pacing)
	}
}
