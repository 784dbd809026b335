package demo

import (
	"fmt"
	"math"
	"sort"
	"testing"
	"time"
)

// TestServiceTime: the service time is a function of the body (a copy takes the same time on
// the same request), log-normal around the median, and Slowdown scales every request by it.
func TestServiceTime(t *testing.T) {
	base, same, slow := &Model{Service: 3 * time.Millisecond}, &Model{Service: 3 * time.Millisecond}, &Model{Service: 3 * time.Millisecond, Slowdown: 1.3}
	var ts []float64
	for i := range 20000 {
		body := fmt.Appendf(nil, `{"inputs":[{"name":"x","data":[%d]}]}`, i)
		b := base.ServiceTime(body)
		if s := same.ServiceTime(body); s != b {
			t.Fatalf("request %d: copy takes %s, model %s", i, s, b)
		}
		if r := float64(slow.ServiceTime(body)) / float64(b); math.Abs(r-1.3) > 1e-4 {
			t.Fatalf("request %d: slowdown ratio %.6f, want 1.3", i, r)
		}
		ts = append(ts, float64(b))
	}
	sort.Float64s(ts)
	median, p99 := ts[len(ts)/2]/float64(time.Millisecond), ts[len(ts)*99/100]/float64(time.Millisecond)
	if math.Abs(median-3) > 0.15 || math.Abs(p99/median-math.Exp(serviceSigma*2.326)) > 0.1 {
		t.Fatalf("median %.3f ms, p99 %.3f ms: not log-normal(3 ms, σ 0.25)", median, p99)
	}
	if (&Model{}).ServiceTime([]byte("x")) != 0 {
		t.Fatal("a model without Service takes time")
	}
}
