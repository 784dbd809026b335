package app

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/tap/internal/route"
	"github.com/understudy-ml/understudy/services/tap/producer"
)

// Reasons a proxied request yields no event, added to the producer's reasons.
const (
	ReasonSampledOut      = "sampled_out"
	ReasonTooLarge        = "too_large"
	ReasonRedactionFailed = "redaction_failed"
	ReasonNoRoute         = "no_route"
	// ReasonInvalidRequestID: the caller's X-Request-Id is not a usable key (empty after
	// trimming, too long, not UTF-8, control characters); the request is proxied untouched.
	ReasonInvalidRequestID = "invalid_request_id"
)

// capturedHeaders is the allow-list of request headers copied into events. Authorization,
// Cookie and every other header are never captured.
var capturedHeaders = [...]string{"Content-Type", "Accept", "User-Agent", HeaderRequestID}

// headerValues holds the values of capturedHeaders, in order ("" when absent): copied on the
// request path without allocating a map, which publish builds off the path.
type headerValues [len(capturedHeaders)]string

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	captured *prometheus.CounterVec
	extract  *prometheus.CounterVec
	reloads  *prometheus.CounterVec
	rejected *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_requests_total", Help: "Requests proxied (captured or not), by route and the status class returned to the caller."}, []string{"route", "code"}),
		rejected: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_requests_rejected_total", Help: "Requests the tap refused before any route, by reason (body_too_large, headers_too_large, unsupported_version, read_timeout, malformed)."}, []string{"reason"}),
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

// finished is an engine-neutral record of one proxied exchange, ready to become an event.
type finished struct {
	id       string
	route    *liveRoute
	start    time.Time
	latency  time.Duration
	method   string
	path     string
	headers  headerValues
	reqBody  capture
	status   int
	respType string
	respBody capture
	failure  *schemas.Error
}

// publishGather is how long the publisher lets exchanges accumulate after the first one
// arrives (see handoff): short next to the Kafka client's linger.
const publishGather = 5 * time.Millisecond

// publishChunk is the smallest share of a batch worth a goroutine of its own.
const publishChunk = 64

// enqueue hands a finished exchange to the publisher without waiting: building, redacting
// and encoding the event happen off the request path. A full queue drops the event and
// counts it.
func (t *Tap) enqueue(f *finished) {
	if !t.queue.put(f) {
		t.producer.NotCaptured(producer.ReasonBufferFull)
	}
}

// publishBatch turns a batch of exchanges into events, on up to GOMAXPROCS goroutines when
// the batch is large (one goroutine keeps up with a few thousand requests a second).
func (t *Tap) publishBatch(b []*finished) {
	n := min(runtime.GOMAXPROCS(0), (len(b)+publishChunk-1)/publishChunk)
	if n <= 1 {
		for _, f := range b {
			t.publish(f)
		}
		return
	}
	var wg sync.WaitGroup
	size := (len(b) + n - 1) / n
	for part := range slices.Chunk(b, size) {
		wg.Go(func() {
			for _, f := range part {
				t.publish(f)
			}
		})
	}
	wg.Wait()
}

func (t *Tap) publish(f *finished) {
	lr := f.route
	t.m.latency.WithLabelValues(lr.Name).Observe(f.latency.Seconds())
	if (f.reqBody.truncated() || f.respBody.truncated()) && lr.Capture.Oversize == route.OversizeSkip {
		t.producer.NotCaptured(ReasonTooLarge)
		return
	}
	ok := f.failure == nil && f.status < 300 && !f.respBody.truncated()
	// Parse the response once, for the prediction and the OIP model fields.
	var doc any
	var docErr error
	if ok {
		doc, docErr = predict.Decode(f.respBody.buf)
	}
	model := schemas.ModelRef{Name: lr.Champion.ModelName, Version: lr.Champion.ModelVersion}
	if lr.extract.Protocol() == predict.ProtocolOIPv2 {
		model = oipModel(f.path, doc, model)
	}
	headers := f.headers.asMap()
	ev := schemas.InferenceEvent{
		RequestID:  f.id,
		Experiment: lr.Experiment,
		Tenant:     lr.Tenant,
		Model:      model,
		EventTime:  f.start,
		Request: schemas.HTTPRequest{
			Method: f.method, Path: f.path, ContentType: headers["content-type"],
			Headers: headers, Body: f.reqBody.buf, Truncated: f.reqBody.truncated(), OriginalSize: f.reqBody.total,
		},
		Response: schemas.HTTPResponse{
			Status: int32(f.status), ContentType: f.respType,
			Body: f.respBody.buf, Truncated: f.respBody.truncated(), OriginalSize: f.respBody.total,
		},
		Latency: f.latency,
		Error:   f.failure,
	}
	if ok {
		p, err := ev.Response.Prediction, docErr
		if err == nil {
			p, err = lr.extract.FromDocument(doc)
		}
		if err != nil {
			t.m.extract.WithLabelValues(extractReason(err)).Inc()
		}
		ev.Response.Prediction = p
	}
	if f.failure == nil && f.status >= 500 {
		ev.Error = &schemas.Error{Kind: "http_status", Message: strconv.Itoa(f.status) + " " + http.StatusText(f.status)}
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

// capturedHeaderValues returns the values get returns for the allow-listed headers.
func capturedHeaderValues(get func(string) string) headerValues {
	var v headerValues
	for i, name := range capturedHeaders {
		v[i] = get(name)
	}
	return v
}

// asMap returns the present headers by lower-case name, as events carry them.
func (v *headerValues) asMap() map[string]string {
	out := make(map[string]string, len(v))
	for i, value := range v {
		if value != "" {
			out[strings.ToLower(capturedHeaders[i])] = value
		}
	}
	return out
}

// oipRequestID returns the "id" of a small Open Inference Protocol request body, or "".
func oipRequestID(body []byte) string {
	// The substring test spares a full parse of the many bodies that carry no id.
	if !bytes.Contains(body, []byte(`"id"`)) {
		return ""
	}
	var doc struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(body, &doc) != nil || len(doc.ID) > 256 {
		return ""
	}
	return doc.ID
}

// newRequestID returns a new UUIDv7. Its random bits come from a buffered pool (see init):
// request ids need to be unique, not secret, and one read of the system's randomness per
// request is a syscall on the request path.
func newRequestID() string { return uuid.Must(uuid.NewV7()).String() }

func init() { uuid.EnableRandPool() }

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
