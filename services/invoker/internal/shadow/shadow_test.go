package shadow

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/experiment"
)

type nopObserver struct {
	mu       sync.Mutex
	circuits []bool
	maxIn    int
	in       int
}

func (o *nopObserver) Called(string, string, time.Duration) {}
func (o *nopObserver) InFlight(_ string, d int) {
	o.mu.Lock()
	o.in += d
	o.maxIn = max(o.maxIn, o.in)
	o.mu.Unlock()
}

func (o *nopObserver) Circuit(_ string, open bool) {
	o.mu.Lock()
	o.circuits = append(o.circuits, open)
	o.mu.Unlock()
}

func newCaller(t *testing.T, h http.HandlerFunc, edit func(*experiment.Shadow)) (*Caller, *nopObserver) {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s := experiment.Shadow{Name: "s", URL: srv.URL}
	if edit != nil {
		edit(&s)
	}
	s.Defaults()
	obs := &nopObserver{}
	c, err := New(s, obs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, obs
}

func event(id string) schemas.InferenceEvent {
	return schemas.InferenceEvent{RequestID: id, Experiment: "e", Request: schemas.HTTPRequest{Method: "POST", Path: "/v2/models/m/infer", Body: []byte(`{}`), Headers: map[string]string{"x-user-id": "u1"}}}
}

func kind(r schemas.ShadowResult) string {
	if r.Error == nil {
		return "ok"
	}
	return r.Error.Kind
}

func TestOutcomes(t *testing.T) {
	var sawShadowHeader, sawHost atomic.Value
	c, _ := newCaller(t, func(w http.ResponseWriter, r *http.Request) {
		sawShadowHeader.Store(r.Header.Get(HeaderShadow))
		sawHost.Store(r.Host)
		switch r.URL.Query().Get("mode") {
		default:
			_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
		}
	}, nil)
	res := c.Call(context.Background(), event("r1"), "run-1")
	if kind(res) != "ok" || !res.Response.Prediction.Equal(schemas.Number(0.5)) || res.RunID != "run-1" || res.Shadow != "s" {
		t.Fatalf("result %+v", res)
	}
	if sawShadowHeader.Load() != "1" || sawHost.Load() != c.target.Host {
		t.Fatalf("shadow header %v, host %v", sawShadowHeader.Load(), sawHost.Load())
	}
	tests := []struct {
		name string
		h    http.HandlerFunc
		edit func(*experiment.Shadow)
		want string
	}{
		{"timeout", func(w http.ResponseWriter, _ *http.Request) { time.Sleep(300 * time.Millisecond) }, func(s *experiment.Shadow) { s.Timeout = 50 * time.Millisecond }, KindTimeout},
		{"garbage", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) }, nil, KindBadResponse},
		{"status", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) }, nil, KindHTTPStatus},
		{"not sampled", nil, func(s *experiment.Shadow) { r := 0.0; s.Sampling.Rate = &r }, KindOutsideSample},
		{"connect", nil, func(s *experiment.Shadow) { s.URL = "http://127.0.0.1:1" }, KindConnect},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.h
			if h == nil {
				h = func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"outputs":[{"data":[1]}]}`)) }
			}
			c, _ := newCaller(t, h, tc.edit)
			if got := kind(c.Call(context.Background(), event("r"), "")); got != tc.want {
				t.Fatalf("kind %q, want %q", got, tc.want)
			}
		})
	}
}

// TestCallsNotMadeSayWhy: a request body the tap truncated is not forwarded, and a call that
// waits for the in-flight budget while the invoker stops is not made; each says which.
func TestCallsNotMadeSayWhy(t *testing.T) {
	c, _ := newCaller(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(`{"outputs":[{"data":[1]}]}`)) }, nil)
	ev := event("r")
	ev.Request.Truncated = true
	if got := kind(c.Call(context.Background(), ev, "")); got != KindBodyTruncated {
		t.Fatalf("truncated body: kind %q, want %q", got, KindBodyTruncated)
	}
	for range cap(c.slots) {
		c.slots <- struct{}{} // the whole in-flight budget in use
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := kind(c.Call(ctx, event("r"), "")); got != KindShuttingDown {
		t.Fatalf("stopping: kind %q, want %q", got, KindShuttingDown)
	}
	for range cap(c.slots) {
		<-c.slots
	}
	if !schemas.NotCalled(KindBodyTruncated) || !schemas.NotCalled(KindShuttingDown) || !schemas.NotCalled(KindOutsideSample) || schemas.NotCalled(KindTimeout) {
		t.Fatal("schemas.NotCalled disagrees with the kinds of calls not made")
	}
}

func TestCircuitOpensAndCloses(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	c, obs := newCaller(t, func(w http.ResponseWriter, _ *http.Request) {
		if failing.Load() {
			w.WriteHeader(500)
			return
		}
		_, _ = w.Write([]byte(`{"outputs":[{"data":[1]}]}`))
	}, func(s *experiment.Shadow) { s.Circuit.Failures = 3; s.Circuit.Cooldown = time.Minute })
	now := time.Unix(1000, 0)
	c.now = func() time.Time { return now }
	var kinds []string
	for range 5 {
		kinds = append(kinds, kind(c.Call(context.Background(), event("r"), "")))
	}
	want := []string{KindHTTPStatus, KindHTTPStatus, KindHTTPStatus, KindCircuitOpen, KindCircuitOpen}
	for i := range want {
		if kinds[i] != want[i] {
			t.Fatalf("kinds %v, want %v", kinds, want)
		}
	}
	// After the cooldown one probe goes through; the shadow recovered, so the circuit closes.
	failing.Store(false)
	now = now.Add(time.Minute)
	if k := kind(c.Call(context.Background(), event("r"), "")); k != "ok" {
		t.Fatalf("probe: %s", k)
	}
	if k := kind(c.Call(context.Background(), event("r"), "")); k != "ok" {
		t.Fatalf("after closing: %s", k)
	}
	if len(obs.circuits) != 2 || !obs.circuits[0] || obs.circuits[1] {
		t.Fatalf("circuit transitions %v, want open then closed", obs.circuits)
	}
}

func TestBudgets(t *testing.T) {
	c, obs := newCaller(t, func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(20 * time.Millisecond)
		_, _ = w.Write([]byte(`{"outputs":[{"data":[1]}]}`))
	}, func(s *experiment.Shadow) { s.MaxInFlight = 3; s.RateLimit = 20; s.Burst = 10 })
	var wg sync.WaitGroup
	var limited, ok atomic.Int32
	for i := range 30 {
		wg.Go(func() {
			switch kind(c.Call(context.Background(), event(string(rune('a'+i))), "")) {
			case KindRateLimited:
				limited.Add(1)
			case "ok":
				ok.Add(1)
			}
		})
	}
	wg.Wait()
	if obs.maxIn > 3 {
		t.Fatalf("%d calls in flight, budget 3", obs.maxIn)
	}
	if ok.Load() < 10 || limited.Load() < 15 || ok.Load()+limited.Load() != 30 {
		t.Fatalf("ok %d, rate limited %d of 30 (burst 10 at 20/s)", ok.Load(), limited.Load())
	}
}

// TestShadowsGetOnlyWhatTheyShould: a produced event cannot steer the invoker to a
// management endpoint, another method, or smuggle credentials to the shadow.
func TestShadowsGetOnlyWhatTheyShould(t *testing.T) {
	var calls atomic.Int64
	var sawAuth, sawCookie, sawType atomic.Value
	c, _ := newCaller(t, func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		sawAuth.Store(r.Header.Get("Authorization"))
		sawCookie.Store(r.Header.Get("Cookie"))
		sawType.Store(r.Header.Get("Content-Type"))
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
	}, nil)
	for _, tc := range []struct{ method, path string }{
		{"POST", "/v2/repository/models/iris-a/unload"},
		{"POST", "/v2/repository/index"},
		{"DELETE", "/v2/models/m/infer"},
		{"GET", "/v2/models/m/infer"},
		{"POST", "/v2/models/m/../../repository/models/m/unload"},
		{"POST", "/v2/models/m/ready"},
		{"POST", "/metrics"},
	} {
		ev := event("r1")
		ev.Request.Method, ev.Request.Path = tc.method, tc.path
		if res := c.Call(context.Background(), ev, ""); kind(res) != KindNotAllowed {
			t.Errorf("%s %s: %s, want %s", tc.method, tc.path, kind(res), KindNotAllowed)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the shadow was called %d times for requests it must not get", n)
	}
	ev := event("r2")
	ev.Request.Headers = map[string]string{"authorization": "Bearer stolen", "cookie": "session=1", "content-type": "application/json"}
	ev.Request.Path = "/v2/models/m/versions/3/infer"
	if res := c.Call(context.Background(), ev, ""); kind(res) != "ok" {
		t.Fatalf("allowed inference call: %s", kind(res))
	}
	if sawAuth.Load() != "" || sawCookie.Load() != "" || sawType.Load() != "application/json" {
		t.Errorf("forwarded Authorization %q, Cookie %q; Content-Type %q", sawAuth.Load(), sawCookie.Load(), sawType.Load())
	}
}
