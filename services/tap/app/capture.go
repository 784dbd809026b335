package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/sample"
	"github.com/understudy-ml/understudy/services/tap/internal/route"
	"github.com/understudy-ml/understudy/services/tap/producer"
)

// Reasons a proxied request yields no event, added to the producer's reasons.
const (
	ReasonSampledOut      = "sampled_out"
	ReasonTooLarge        = "too_large"
	ReasonRedactionFailed = "redaction_failed"
	ReasonNoRoute         = "no_route"
)

// capturedHeaders is the allow-list of request headers copied into events. Authorization,
// Cookie and every other header are never captured.
var capturedHeaders = []string{"Content-Type", "Accept", "User-Agent", HeaderRequestID}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	captured *prometheus.CounterVec
	extract  *prometheus.CounterVec
	reloads  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_requests_total", Help: "Requests proxied, by route and champion status class."}, []string{"route", "code"}),
		latency:  f.NewHistogramVec(prometheus.HistogramOpts{Name: "understudy_tap_champion_latency_seconds", Help: "Time from request to the champion's last response byte, by route.", Buckets: prometheus.ExponentialBuckets(0.00025, 2, 18)}, []string{"route"}),
		captured: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_captured_total", Help: "Events handed to the producer, by route."}, []string{"route"}),
		extract:  f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_prediction_extract_failures_total", Help: "Responses whose prediction could not be extracted, by reason."}, []string{"reason"}),
		reloads:  f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_route_reloads_total", Help: "Routes reloads, by result."}, []string{"result"}),
	}
}

// capture copies at most limit bytes of what passes through it and counts the rest.
type capture struct {
	limit int
	buf   []byte
	total int64
}

func (c *capture) write(p []byte) {
	c.total += int64(len(p))
	if room := c.limit - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
}

func (c *capture) truncated() bool { return c.total > int64(len(c.buf)) }

// teeReader captures what the proxy reads from the caller.
type teeReader struct {
	io.ReadCloser
	c *capture
}

func (r *teeReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.write(p[:n])
	return n, err
}

// exchange is the per-request state shared by the handler and the proxy hooks.
type exchange struct {
	id      string
	start   time.Time
	route   *liveRoute
	req     *http.Request
	reqBody capture
	done    sync.Once
}

type exchangeKey struct{}

func (t *Tap) serveHTTP(w http.ResponseWriter, r *http.Request) {
	g := t.routing.Load()
	i := g.table.Match(r.Host, r.URL.Path)
	if i < 0 {
		t.producer.NotCaptured(ReasonNoRoute)
		http.Error(w, "understudy tap: no route for this host and path", http.StatusNotFound)
		return
	}
	lr := g.routes[i]
	id := r.Header.Get(HeaderRequestID)
	if id == "" {
		id = t.bodyID(r, lr)
		r.Header.Set(HeaderRequestID, id)
	}
	w.Header().Set(HeaderRequestID, id)
	key := id
	if h := lr.Sampling.Header(); h != "" && r.Header.Get(h) != "" {
		key = r.Header.Get(h)
	}
	if !sample.In(key, lr.Sampling.SampleRate()) {
		t.producer.NotCaptured(ReasonSampledOut)
		lr.proxy.ServeHTTP(w, r)
		return
	}
	x := &exchange{id: id, start: t.now(), route: lr, req: r, reqBody: capture{limit: lr.Capture.MaxBytes}}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &teeReader{ReadCloser: r.Body, c: &x.reqBody}
	}
	lr.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
}

// bodyID returns the Open Inference Protocol "id" of a small OIP request body, or a new
// UUIDv7. Reading the body first costs nothing on the wire: it is replayed to the champion.
func (t *Tap) bodyID(r *http.Request, lr *liveRoute) string {
	if lr.extract.Protocol() == predict.ProtocolOIPv2 && r.Body != nil && r.ContentLength > 0 && r.ContentLength <= int64(lr.Capture.MaxBytes) {
		body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		var doc struct {
			ID string `json:"id"`
		}
		// The substring test spares a full parse of the many bodies that carry no id.
		if err == nil && bytes.Contains(body, []byte(`"id"`)) && json.Unmarshal(body, &doc) == nil && doc.ID != "" && len(doc.ID) <= 256 {
			return doc.ID
		}
	}
	return uuid.Must(uuid.NewV7()).String()
}

// responseTee captures the champion's body as the proxy copies it to the caller and publishes
// the event when the body is closed.
type responseTee struct {
	io.ReadCloser
	t    *Tap
	x    *exchange
	resp *http.Response
	body capture
}

func (r *responseTee) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.body.write(p[:n])
	return n, err
}

func (r *responseTee) Close() error {
	err := r.ReadCloser.Close()
	r.x.done.Do(func() { r.t.enqueue(job{r.x, r.resp, &r.body, nil}) })
	return err
}

// job is a finished exchange waiting to become an event.
type job struct {
	x       *exchange
	resp    *http.Response
	body    *capture
	failure *schemas.Error
}

// enqueue hands a finished exchange to the publishing workers without waiting: building,
// redacting and encoding the event happen off the request path. A full queue drops the event
// and counts it.
func (t *Tap) enqueue(j job) {
	select {
	case t.queue <- j:
	default:
		t.producer.NotCaptured(producer.ReasonBufferFull)
	}
}

// publishLoop turns queued exchanges into events until the queue is closed.
func (t *Tap) publishLoop() {
	for j := range t.queue {
		t.publish(j.x, j.resp, j.body, j.failure)
	}
}

func (t *Tap) captureResponse(resp *http.Response) error {
	x, ok := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return nil
	}
	resp.Body = &responseTee{ReadCloser: resp.Body, t: t, x: x, resp: resp, body: capture{limit: x.route.Capture.MaxBytes}}
	return nil
}

// championError answers 504 when the champion timed out and 502 otherwise, like a gateway,
// and records the failure in the event.
func (t *Tap) championError(w http.ResponseWriter, r *http.Request, err error) {
	kind, code := "connect", http.StatusBadGateway
	var ne interface{ Timeout() bool }
	switch {
	case errors.Is(err, context.Canceled):
		kind = "client_canceled"
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		kind, code = "timeout", http.StatusGatewayTimeout
	}
	w.WriteHeader(code)
	x, ok := r.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return
	}
	x.done.Do(func() {
		t.enqueue(job{x, &http.Response{StatusCode: code, Header: http.Header{}}, &capture{}, &schemas.Error{Kind: kind, Message: err.Error()}})
	})
}

func (t *Tap) publish(x *exchange, resp *http.Response, body *capture, failure *schemas.Error) {
	lr := x.route
	latency := t.now().Sub(x.start)
	t.m.latency.WithLabelValues(lr.Name).Observe(latency.Seconds())
	t.m.requests.WithLabelValues(lr.Name, statusClass(resp.StatusCode)).Inc()
	truncated := x.reqBody.truncated() || body.truncated()
	if truncated && lr.Capture.Oversize == route.OversizeSkip {
		t.producer.NotCaptured(ReasonTooLarge)
		return
	}
	// Parse the response once, for the prediction and the OIP model fields.
	var doc any
	var docErr error
	if failure == nil && resp.StatusCode < 300 && !body.truncated() {
		doc, docErr = predict.Decode(body.buf)
	}
	model := schemas.ModelRef{Name: lr.Champion.ModelName, Version: lr.Champion.ModelVersion}
	if lr.extract.Protocol() == predict.ProtocolOIPv2 {
		model = oipModel(x.req.URL.Path, doc, model)
	}
	ev := schemas.InferenceEvent{
		RequestID:  x.id,
		Experiment: lr.Experiment,
		Tenant:     lr.Tenant,
		Model:      model,
		EventTime:  x.start,
		Request: schemas.HTTPRequest{
			Method: x.req.Method, Path: x.req.URL.Path, ContentType: x.req.Header.Get("Content-Type"),
			Headers: capturedHeaderValues(x.req.Header), Body: x.reqBody.buf, Truncated: x.reqBody.truncated(), OriginalSize: x.reqBody.total,
		},
		Response: schemas.HTTPResponse{
			Status: int32(resp.StatusCode), ContentType: resp.Header.Get("Content-Type"),
			Body: body.buf, Truncated: body.truncated(), OriginalSize: body.total,
		},
		Latency: latency,
		Error:   failure,
	}
	if failure == nil && resp.StatusCode < 300 && !body.truncated() {
		p, err := ev.Response.Prediction, docErr
		if err == nil {
			p, err = lr.extract.FromDocument(doc)
		}
		if err != nil {
			t.m.extract.WithLabelValues(extractReason(err)).Inc()
		}
		ev.Response.Prediction = p
	}
	if failure == nil && resp.StatusCode >= 500 {
		ev.Error = &schemas.Error{Kind: "http_status", Message: resp.Status}
	}
	if !lr.redact.Empty() {
		var errReq, errResp error
		ev.Request.Body, errReq = lr.redact.Apply(ev.Request.Body)
		ev.Response.Body, errResp = lr.redact.Apply(ev.Response.Body)
		if errReq != nil || errResp != nil {
			// Never publish what could not be redacted.
			t.producer.NotCaptured(ReasonRedactionFailed)
			return
		}
	}
	if err := t.producer.Publish(ev); err == nil {
		t.m.captured.WithLabelValues(lr.Name).Inc()
	}
}

// oipModel returns the model named by an Open Inference Protocol path
// (/v2/models/{name}[/versions/{v}]/infer) or, better, by the decoded response's model_name
// and model_version; def fills what neither names.
func oipModel(path string, doc any, def schemas.ModelRef) schemas.ModelRef {
	m := def
	if rest, ok := strings.CutPrefix(path, "/v2/models/"); ok {
		parts := strings.Split(rest, "/")
		if len(parts) >= 2 && parts[0] != "" {
			m.Name = parts[0]
			if len(parts) >= 4 && parts[1] == "versions" {
				m.Version = parts[2]
			}
		}
	}
	if resp, ok := doc.(map[string]any); ok {
		if name, _ := resp["model_name"].(string); name != "" {
			m.Name = name
		}
		if version, _ := resp["model_version"].(string); version != "" {
			m.Version = version
		}
	}
	return m
}

func capturedHeaderValues(h http.Header) map[string]string {
	out := map[string]string{}
	for _, name := range capturedHeaders {
		if v := h.Get(name); v != "" {
			out[strings.ToLower(name)] = v
		}
	}
	return out
}

func extractReason(err error) string {
	switch {
	case errors.Is(err, predict.ErrNotJSON):
		return "not_json"
	case errors.Is(err, predict.ErrNoPrediction):
		return "no_prediction"
	}
	return "unsupported"
}

func statusClass(code int) string {
	return string(rune('0'+code/100)) + "xx"
}

// bufferPool hands the proxies 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }
