package backoff

import (
	"context"
	"testing"
	"time"
)

func TestDelay(t *testing.T) {
	for attempt, ceil := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 10 * time.Second, 10 * time.Second} {
		for _, u := range []float64{0, 0.5, 0.999999} {
			d := Delay(attempt, time.Second, 10*time.Second, u)
			if d < 500*time.Millisecond || d >= ceil {
				t.Fatalf("attempt %d u %.2f: %s outside [0.5s, %s)", attempt, u, d, ceil)
			}
		}
		if lo, hi := Delay(attempt, time.Second, 10*time.Second, 0), Delay(attempt, time.Second, 10*time.Second, 0.9); hi <= lo {
			t.Fatalf("attempt %d: no jitter (%s, %s)", attempt, lo, hi)
		}
	}
	if d := Delay(1000, time.Second, time.Minute, 0.99); d > time.Minute || d < 30*time.Second {
		t.Fatalf("attempt 1000: %s, want capped near max", d)
	}
}

func TestRetryWaitEndsWithContext(t *testing.T) {
	r := Retry{Min: time.Millisecond, Max: 4 * time.Millisecond}
	for range 4 {
		if !r.Wait(context.Background()) {
			t.Fatal("wait without cancellation returned false")
		}
	}
	if r.attempt != 4 {
		t.Fatalf("attempt %d after 4 waits", r.attempt)
	}
	r.Reset()
	if r.attempt != 0 {
		t.Fatal("reset kept the attempt count")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := Retry{Min: time.Hour, Max: time.Hour}
	start := time.Now()
	if slow.Wait(ctx) || time.Since(start) > time.Second {
		t.Fatal("wait did not end with its context")
	}
}
