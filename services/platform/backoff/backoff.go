// Package backoff is the one retry delay of Understudy's services: exponential with full
// jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"), so replicas retrying the
// same outage spread out instead of knocking together.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Delay is the delay before retry number attempt+1 (attempt counts from 0): u in [0, 1)
// spread over [min/2, ceiling), where the ceiling is min·2^attempt capped at max.
func Delay(attempt int, min, max time.Duration, u float64) time.Duration {
	ceil := max
	if attempt >= 0 && attempt < 30 {
		ceil = min << attempt
		if ceil > max || ceil <= 0 {
			ceil = max
		}
	}
	return min/2 + time.Duration(u*float64(ceil-min/2))
}

// Retry is a retry loop's state. The zero value is not usable: set Min and Max (Max ≥ Min > 0).
type Retry struct {
	Min, Max time.Duration
	attempt  int
}

// Wait sleeps for the next jittered delay and reports true, or returns false as soon as ctx
// ends.
func (r *Retry) Wait(ctx context.Context) bool {
	d := Delay(r.attempt, r.Min, r.Max, rand.Float64())
	r.attempt++
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// Reset starts the delays over from Min, after a success.
func (r *Retry) Reset() { r.attempt = 0 }
