package store

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)

func TestPlanCoversRangeOnceWithCoarsestLevels(t *testing.T) {
	s := New(nil, "g", DefaultLevels(time.Minute))
	from := time.Date(2026, 11, 24, 22, 30, 20, 0, time.UTC)
	to := time.Date(2026, 11, 26, 1, 15, 0, 0, time.UTC)
	spans := s.plan(from, to)
	var covered time.Duration
	widths := map[time.Duration]int{}
	for _, sp := range spans {
		if sp.from.Truncate(sp.width) != sp.from || sp.to.Truncate(sp.width) != sp.to {
			t.Fatalf("span %v not aligned", sp)
		}
		covered += sp.to.Sub(sp.from)
		widths[sp.width]++
	}
	// 22:30 → 01:15 two days later, aligned out to 22:30 .. 01:15: one day at day level.
	if want := to.Sub(from.Truncate(time.Minute)); covered != want {
		t.Fatalf("covered %s, want %s: %v", covered, want, spans)
	}
	if widths[24*time.Hour] != 1 || widths[time.Hour] != 2 || widths[time.Minute] != 2 {
		t.Fatalf("spans %v", spans)
	}
	if got := s.plan(t0, t0.Add(30*time.Second)); len(got) != 1 || got[0].to.Sub(got[0].from) != time.Minute {
		t.Fatalf("sub-minute range %v", got)
	}
}

// TestFirstStartIsTheDataNotTheRollup: the earliest data starts in the finest level whose
// earliest window lies within the coarser level's; expired base windows fall back to the
// hour, and a finer level that lost its first windows does not move the start later.
func TestFirstStartIsTheDataNotTheRollup(t *testing.T) {
	levels := DefaultLevels(time.Minute)
	day := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	data := day.Add(22*time.Hour + 17*time.Minute)
	for _, tc := range []struct {
		name string
		mins map[time.Duration]time.Time
		want time.Time
		ok   bool
	}{
		{"every level", map[time.Duration]time.Time{time.Minute: data, time.Hour: data.Truncate(time.Hour), 24 * time.Hour: day}, data, true},
		{"rollups not run yet", map[time.Duration]time.Time{time.Minute: data}, data, true},
		{"base windows expired", map[time.Duration]time.Time{time.Hour: data.Truncate(time.Hour), 24 * time.Hour: day}, data.Truncate(time.Hour), true},
		{"base keeps only later days", map[time.Duration]time.Time{time.Minute: day.Add(72 * time.Hour), time.Hour: data.Truncate(time.Hour), 24 * time.Hour: day}, data.Truncate(time.Hour), true},
		{"no windows", map[time.Duration]time.Time{}, time.Time{}, false},
	} {
		if got, ok := firstStart(tc.mins, levels); !got.Equal(tc.want) || ok != tc.ok {
			t.Errorf("%s: firstStart = %s, %v; want %s, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}
