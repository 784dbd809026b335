package app

import (
	"testing"
	"time"
)

func TestPacerKeepsArrivalGapsAndCatchesUpBacklogs(t *testing.T) {
	p := pacer{delay: 100 * time.Millisecond}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := t0.Add(60 * time.Millisecond)
	// Events 20 ms apart wait until 100 ms after their own event times: their gaps survive.
	for _, at := range []time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond} {
		w, pacing := p.plan(now, t0.Add(at))
		if want := 40*time.Millisecond + at; w != want || pacing != PacingPaced {
			t.Fatalf("event at +%s: wait %s (%s), want %s paced", at, w, pacing, want)
		}
	}
	if w, pacing := p.plan(t0.Add(105*time.Millisecond), t0); w != 0 || pacing != PacingPaced {
		t.Fatalf("5 ms past due: wait %s, %s; want 0 paced", w, pacing)
	}
	if _, pacing := p.plan(t0.Add(500*time.Millisecond), t0); pacing != PacingLate {
		t.Fatalf("400 ms past due: %s, want late", pacing)
	}
	if w, pacing := p.plan(t0.Add(5*time.Second), t0); w != 0 || pacing != PacingCatchUp {
		t.Fatalf("backlog: wait %s, %s", w, pacing)
	}
	if _, pacing := (pacer{}).plan(t0, t0); pacing != PacingOff {
		t.Fatalf("delay 0: %s", pacing)
	}
}
