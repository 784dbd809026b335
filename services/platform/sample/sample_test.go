package sample

import (
	"fmt"
	"math"
	"testing"
)

func TestInIsDeterministicAndCalibrated(t *testing.T) {
	// Pinned values, computed independently with Python's hashlib: other implementations must agree.
	pinned := map[string]float64{"": 0.8894159948913373, "user-42": 0.4278761530135857, "req-1": 0.5794485793621023}
	for k, want := range pinned {
		if got := Fraction(k); math.Abs(got-want) > 1e-15 {
			t.Errorf("Fraction(%q) = %.16f, want %.16f", k, got, want)
		}
	}
	for _, rate := range []float64{0, 0.1, 0.5, 1} {
		in := 0
		const n = 100000
		for i := range n {
			key := fmt.Sprintf("user-%d", i)
			first := In(key, rate)
			if first != In(key, rate) {
				t.Fatal("not deterministic")
			}
			if first {
				in++
			}
		}
		if got := float64(in) / n; math.Abs(got-rate) > 0.01 {
			t.Errorf("rate %.1f kept %.3f", rate, got)
		}
	}
	// A larger rate keeps a superset: raising the rate never drops someone already in.
	for i := range 1000 {
		key := fmt.Sprint("k", i)
		if In(key, 0.2) && !In(key, 0.3) {
			t.Fatalf("%s in the 20%% sample but not the 30%% one", key)
		}
	}
}
