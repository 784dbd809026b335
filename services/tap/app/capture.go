package app

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
)

// Reasons a request produced no event (label of understudy_tap_events_dropped_total).
const (
	ReasonBufferFull       = "buffer_full"
	ReasonKafkaUnavailable = "kafka_unavailable"
	ReasonEncode           = "encode_failed"
)

// capturedHeaders is the allow-list of request headers copied into events. Authorization,
// Cookie and every other header are never captured.
var capturedHeaders = []string{"Content-Type", "Accept", "User-Agent", HeaderRequestID}

type metrics struct {
	requests  *prometheus.CounterVec
	events    prometheus.Counter
	dropped   *prometheus.CounterVec
	truncated prometheus.Counter
	latency   prometheus.Histogram
	extract   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	f := promauto.With(reg)
	return &metrics{
		requests:  f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_requests_total", Help: "Requests proxied, by champion status class."}, []string{"code"}),
		events:    f.NewCounter(prometheus.CounterOpts{Name: "understudy_tap_events_total", Help: "Inference events acknowledged by Kafka."}),
		dropped:   f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_events_dropped_total", Help: "Requests that produced no event, by reason."}, []string{"reason"}),
		truncated: f.NewCounter(prometheus.CounterOpts{Name: "understudy_tap_bodies_truncated_total", Help: "Captured bodies cut at capture.max-bytes (the proxied body is whole)."}),
		latency:   f.NewHistogram(prometheus.HistogramOpts{Name: "understudy_tap_champion_latency_seconds", Help: "Champion latency as seen by the tap.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		extract:   f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_tap_prediction_extract_failures_total", Help: "Responses whose prediction could not be extracted, by reason."}, []string{"reason"}),
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
	req     *http.Request
	reqBody capture
	done    sync.Once
}

type exchangeKey struct{}

func (t *Tap) serveHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.Header.Get(HeaderRequestID)
	if id == "" {
		id = uuid.Must(uuid.NewV7()).String()
		r.Header.Set(HeaderRequestID, id)
	}
	x := &exchange{id: id, start: t.now(), req: r, reqBody: capture{limit: t.cfg.CaptureMaxBytes}}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &teeReader{ReadCloser: r.Body, c: &x.reqBody}
	}
	w.Header().Set(HeaderRequestID, id)
	t.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
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
	r.x.done.Do(func() { r.t.publish(r.x, r.resp, &r.body, nil) })
	return err
}

func (t *Tap) captureResponse(resp *http.Response) error {
	x, ok := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return nil
	}
	resp.Body = &responseTee{ReadCloser: resp.Body, t: t, x: x, resp: resp, body: capture{limit: t.cfg.CaptureMaxBytes}}
	return nil
}

// championError answers 502 like the default proxy and records the failure as an event.
func (t *Tap) championError(w http.ResponseWriter, r *http.Request, err error) {
	w.WriteHeader(http.StatusBadGateway)
	x, ok := r.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return
	}
	kind := "connect"
	if errors.Is(err, context.DeadlineExceeded) {
		kind = "timeout"
	} else if errors.Is(err, context.Canceled) {
		kind = "client_canceled"
	}
	x.done.Do(func() {
		t.publish(x, &http.Response{StatusCode: http.StatusBadGateway, Header: http.Header{}}, &capture{}, &schemas.Error{Kind: kind, Message: err.Error()})
	})
}

func (t *Tap) publish(x *exchange, resp *http.Response, body *capture, failure *schemas.Error) {
	latency := t.now().Sub(x.start)
	t.m.latency.Observe(latency.Seconds())
	t.m.requests.WithLabelValues(statusClass(resp.StatusCode)).Inc()
	if x.reqBody.truncated() || body.truncated() {
		t.m.truncated.Inc()
	}
	headers := map[string]string{}
	for _, h := range capturedHeaders {
		if v := x.req.Header.Get(h); v != "" {
			headers[strings.ToLower(h)] = v
		}
	}
	ev := schemas.InferenceEvent{
		RequestID:  x.id,
		Experiment: t.cfg.Experiment,
		Tenant:     t.cfg.Tenant,
		Model:      schemas.ModelRef{Name: t.cfg.ModelName, Version: t.cfg.ModelVersion},
		EventTime:  x.start,
		Request: schemas.HTTPRequest{
			Method: x.req.Method, Path: x.req.URL.Path, ContentType: x.req.Header.Get("Content-Type"),
			Headers: headers, Body: x.reqBody.buf, Truncated: x.reqBody.truncated(), OriginalSize: x.reqBody.total,
		},
		Response: schemas.HTTPResponse{
			Status: int32(resp.StatusCode), ContentType: resp.Header.Get("Content-Type"),
			Body: body.buf, Truncated: body.truncated(), OriginalSize: body.total,
		},
		Latency: latency,
		Error:   failure,
	}
	if failure == nil && resp.StatusCode < 300 && !body.truncated() {
		p, err := t.extract.Extract(body.buf)
		if err != nil {
			t.m.extract.WithLabelValues(extractReason(err)).Inc()
		}
		ev.Response.Prediction = p
	}
	if failure == nil && resp.StatusCode >= 500 {
		ev.Error = &schemas.Error{Kind: "http_status", Message: resp.Status}
	}
	value, err := t.codecs.Inference.Encode(nil, ev)
	if err != nil {
		t.m.dropped.WithLabelValues(ReasonEncode).Inc()
		return
	}
	t.client.TryProduce(context.Background(), &kgo.Record{Key: []byte(x.id), Value: value}, func(_ *kgo.Record, err error) {
		switch {
		case err == nil:
			t.m.events.Inc()
		case errors.Is(err, kgo.ErrMaxBuffered):
			t.m.dropped.WithLabelValues(ReasonBufferFull).Inc()
		default:
			t.m.dropped.WithLabelValues(ReasonKafkaUnavailable).Inc()
		}
	})
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

// bufferPool hands the proxy 32 KiB copy buffers.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(p []byte) { b.p.Put(&p) }
