// Package shadow calls one shadow model with captured requests, within the shadow's budget:
// bounded in-flight calls (callers wait: backpressure, so a slow shadow grows consumer lag,
// not memory), a token-bucket rate (calls beyond it are not made and reported as
// rate_limited), deterministic sampling (reported as outside_sample) and a circuit breaker (reported
// as circuit_open). Every call yields exactly one result with an error kind when it failed;
// Call never returns an error.
package shadow

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/sample"
	"github.com/understudy-ml/understudy/services/platform/upstream"
	"github.com/valyala/fasthttp"
	"golang.org/x/time/rate"
)

// Error kinds of shadow results.
const (
	KindTimeout     = "timeout"
	KindConnect     = "connect"
	KindHTTPStatus  = "http_status"
	KindBadResponse = "bad_response"
	// The calls not made (schemas.NotCalled): not in the shadow's sample, a request body the
	// tap captured truncated, the invoker stopping, over the rate limit, the circuit open, or
	// a method or path outside what the shadow's experiment allows (forward.methods,
	// forward.paths, never the management API).
	KindOutsideSample = schemas.NotCalledOutsideSample
	KindBodyTruncated = schemas.NotCalledBodyTruncated
	KindShuttingDown  = schemas.NotCalledShuttingDown
	KindRateLimited   = schemas.NotCalledRateLimited
	KindCircuitOpen   = schemas.NotCalledCircuitOpen
	KindNotAllowed    = schemas.NotCalledNotAllowed
)

// Kinds lists every error kind, for metrics.
var Kinds = []string{
	KindTimeout, KindConnect, KindHTTPStatus, KindBadResponse,
	KindOutsideSample, KindBodyTruncated, KindShuttingDown, KindRateLimited, KindCircuitOpen, KindNotAllowed,
}

// HeaderShadow marks shadow traffic so the shadow's own telemetry can tell it apart.
const HeaderShadow = "X-Understudy-Shadow"

// Observer receives what a Caller does, for metrics. Methods must be cheap and concurrent-safe.
type Observer interface {
	Called(shadow, outcome string, latency time.Duration)
	InFlight(shadow string, delta int)
	Circuit(shadow string, open bool)
}

// Caller calls one shadow. It is safe for concurrent use.
type Caller struct {
	cfg    experiment.Shadow
	target *url.URL
	client *fasthttp.HostClient
	// endpoint: the URL names the full endpoint, so the captured path is not used.
	endpoint bool
	extract  predict.Extractor
	slots    chan struct{}
	limiter  *rate.Limiter
	breaker  breaker
	obs      Observer
	now      func() time.Time
}

// New returns a caller for a validated shadow config (see experiment.Shadow.Defaults).
func New(cfg experiment.Shadow, obs Observer) (*Caller, error) {
	target, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err
	}
	extract, err := predict.Parse(cfg.Protocol)
	if err != nil {
		return nil, err
	}
	addr, tls := upstream.Target(target)
	c := &Caller{
		cfg: cfg, target: target, extract: extract, obs: obs, now: time.Now,
		slots:    make(chan struct{}, cfg.MaxInFlight),
		endpoint: target.Path != "" && target.Path != "/",
		client: upstream.NewHostClient(upstream.Config{
			Addr: addr, TLS: tls, MaxConns: cfg.MaxInFlight, MaxBodyBytes: 16 << 20,
		}),
		breaker: breaker{threshold: cfg.Circuit.Failures, cooldown: cfg.Circuit.Cooldown},
	}
	if cfg.RateLimit > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RateLimit), cfg.Burst)
	}
	return c, nil
}

// Name returns the shadow's name.
func (c *Caller) Name() string { return c.cfg.Name }

// Close releases idle connections.
func (c *Caller) Close() { c.client.CloseIdleConnections() }

// Call replays ev against the shadow and describes the outcome in a result tagged runID. It
// blocks while the shadow's in-flight budget is used up, or until ctx ends (then the result
// has kind shutting_down).
func (c *Caller) Call(ctx context.Context, ev schemas.InferenceEvent, runID string) schemas.ShadowResult {
	res := schemas.ShadowResult{
		RequestID: ev.RequestID, Experiment: ev.Experiment, Tenant: ev.Tenant,
		Shadow: c.cfg.Name, Role: c.cfg.Role, Model: schemas.ModelRef{Name: c.cfg.Model, Version: c.cfg.Version},
		EventTime: ev.EventTime, CalledAt: c.now(), RunID: runID,
	}
	fail := func(kind, msg string) schemas.ShadowResult {
		res.Error = &schemas.Error{Kind: kind, Message: msg}
		c.obs.Called(c.cfg.Name, kind, 0)
		return res
	}
	key := ev.RequestID
	if h, ok := strings.CutPrefix(c.cfg.Sampling.Key, "header:"); ok {
		if v := ev.Request.Headers[strings.ToLower(h)]; v != "" {
			key = v
		}
	}
	if !sample.In(key, c.cfg.Sampling.Rate1()) {
		return fail(KindOutsideSample, "not in this shadow's sample")
	}
	if ev.Request.Truncated {
		return fail(KindBodyTruncated, "the captured request body was truncated")
	}
	if !c.cfg.Forward.AllowsMethod(c.method(ev)) {
		return fail(KindNotAllowed, "method not allowed for this shadow (forward.methods)")
	}
	if !c.endpoint && !c.cfg.Forward.AllowsPath(ev.Request.Path) {
		return fail(KindNotAllowed, "path not allowed for this shadow (forward.paths; never /v2/repository)")
	}
	allowed, probe := c.breaker.allow(c.now())
	if !allowed {
		return fail(KindCircuitOpen, "circuit open after repeated failures")
	}
	if c.limiter != nil && !c.limiter.Allow() {
		c.breaker.release(probe)
		return fail(KindRateLimited, "over the shadow's rate limit")
	}
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		c.breaker.release(probe)
		return fail(KindShuttingDown, "stopped before the call: "+ctx.Err().Error())
	}
	c.obs.InFlight(c.cfg.Name, 1)
	defer func() { c.obs.InFlight(c.cfg.Name, -1); <-c.slots }()
	res.CalledAt = c.now()
	kind, msg := c.do(ev, &res)
	if kind != "" {
		res.Error = &schemas.Error{Kind: kind, Message: msg}
	}
	failed := kind == KindTimeout || kind == KindConnect || (kind == KindHTTPStatus && res.Response.Status >= 500)
	if changed, open := c.breaker.record(!failed, probe, c.now()); changed {
		c.obs.Circuit(c.cfg.Name, open)
	}
	outcome := kind
	if outcome == "" {
		outcome = "ok"
	}
	c.obs.Called(c.cfg.Name, outcome, res.Latency)
	return res
}

func (c *Caller) do(ev schemas.InferenceEvent, res *schemas.ShadowResult) (kind, msg string) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	u := *c.target
	if !c.endpoint {
		u.Path = ev.Request.Path
	}
	req.SetRequestURI(u.String())
	req.Header.SetHost(c.target.Host) // the shadow's own Host
	req.Header.SetMethod(c.method(ev))
	for k, v := range ev.Request.Headers {
		if c.cfg.Forward.AllowsHeader(k) {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set(HeaderShadow, "1")
	req.Header.Set("X-Request-Id", ev.RequestID)
	req.SetBody(ev.Request.Body)
	start := time.Now()
	err := c.client.DoTimeout(req, resp, c.cfg.Timeout)
	res.Latency = time.Since(start)
	if err != nil {
		if errors.Is(err, fasthttp.ErrTimeout) {
			return KindTimeout, "no answer within " + c.cfg.Timeout.String()
		}
		return KindConnect, err.Error()
	}
	body := resp.Body()
	limit := c.cfg.MaxBodyKB << 10
	res.Response = schemas.HTTPResponse{
		Status: int32(resp.StatusCode()), ContentType: string(resp.Header.ContentType()),
		OriginalSize: int64(len(body)), Truncated: len(body) > limit,
		Body: append([]byte(nil), body[:min(len(body), limit)]...),
	}
	if resp.StatusCode() >= 300 {
		return KindHTTPStatus, strings.TrimSpace(string(resp.Header.StatusMessage()) + " " + fasthttp.StatusMessage(resp.StatusCode()))
	}
	p, err := c.extract.Extract(body)
	if err != nil {
		return KindBadResponse, err.Error()
	}
	res.Response.Prediction = p
	return "", ""
}

// method returns the method of the captured request (POST when the event has none).
func (c *Caller) method(ev schemas.InferenceEvent) string {
	if ev.Request.Method == "" {
		return fasthttp.MethodPost
	}
	return ev.Request.Method
}

// breaker is a consecutive-failure circuit breaker with a single half-open probe. While it is
// open, only the probe's outcome can close it: successes of calls admitted before it opened
// do not.
type breaker struct {
	threshold int // <= 0: disabled
	cooldown  time.Duration

	mu       sync.Mutex
	failures int
	openTill time.Time
	probing  bool
}

func (b *breaker) isOpen() bool { return b.threshold > 0 && b.failures >= b.threshold }

// allow reports whether a call may proceed, and whether it is the half-open probe; while open
// it refuses until the cooldown ends, then lets exactly one probe through.
func (b *breaker) allow(now time.Time) (allowed, probe bool) {
	if b.threshold <= 0 {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.isOpen() {
		return true, false
	}
	if now.Before(b.openTill) || b.probing {
		return false, false
	}
	b.probing = true
	return true, true
}

// release gives back a probe slot that was not used for a call.
func (b *breaker) release(probe bool) {
	if !probe {
		return
	}
	b.mu.Lock()
	b.probing = false
	b.mu.Unlock()
}

// record notes a call's outcome; it reports whether the circuit changed state and whether it
// is now open.
func (b *breaker) record(ok, probe bool, now time.Time) (changed, open bool) {
	if b.threshold <= 0 {
		return false, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	wasOpen := b.isOpen()
	if probe {
		b.probing = false
	}
	switch {
	case ok && (!wasOpen || probe):
		b.failures = 0
		return wasOpen, false
	case ok:
		return false, true // a call admitted before the circuit opened: not evidence of recovery
	case wasOpen && !probe:
		return false, true
	}
	b.failures++
	if b.isOpen() {
		b.openTill = now.Add(b.cooldown)
		return !wasOpen, true
	}
	return false, false
}
