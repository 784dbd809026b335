package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/sample"
)

// The standard engine: net/http's server and httputil.ReverseProxy. It streams bodies in both
// directions and speaks HTTP/2 without TLS (h2c) to upstreams that ask for it.

// exchange is the per-request state shared by the handler and the proxy hooks.
type exchange struct {
	id      string
	start   time.Time
	route   *liveRoute
	req     *http.Request
	reqBody capture
	done    sync.Once
}

// finish records the end of the exchange for publishing.
func (x *exchange) finish(end time.Time, status int, respType string, body capture, failure *schemas.Error) *finished {
	return &finished{
		id: x.id, route: x.route, start: x.start, latency: end.Sub(x.start),
		method: x.req.Method, path: x.req.URL.Path, headers: capturedHeaderValues(x.req.Header.Get),
		reqBody: x.reqBody, status: status, respType: respType, respBody: body, failure: failure,
	}
}

type exchangeKey struct{}

// replayableBody is the largest request body the std engine reads whole before forwarding
// (larger ones stream, and are not sent again after a connection failure).
const replayableBody = 1 << 20

// routeKey carries the route of a request that is not captured (captured ones carry their
// exchange), so that every request is counted by route.
type routeKey struct{}

// countRequest counts a proxied request by route and the status returned to the caller.
func (t *Tap) countRequest(r *http.Request, code int) {
	name := ""
	if x, ok := r.Context().Value(exchangeKey{}).(*exchange); ok {
		name = x.route.Name
	} else if lr, ok := r.Context().Value(routeKey{}).(*liveRoute); ok {
		name = lr.Name
	}
	t.m.requests.WithLabelValues(name, statusClass(code)).Inc()
}

func (t *Tap) serveHTTP(w http.ResponseWriter, r *http.Request) {
	g := t.routing.Load()
	i := g.table.Match(r.Host, r.URL.Path)
	if i < 0 {
		t.producer.NotCaptured(ReasonNoRoute)
		http.Error(w, "understudy tap: no route for this host and path", http.StatusNotFound)
		return
	}
	lr := g.routes[i]
	if r.ProtoMajor != 1 || r.ProtoMinor > 1 {
		if r.ProtoMajor != 2 { // net/http serves HTTP/2 itself (h2c); anything else is refused
			t.m.rejected.WithLabelValues(RejectUnsupportedVersion).Inc()
			http.Error(w, "understudy tap: HTTP version not supported", http.StatusHTTPVersionNotSupported)
			return
		}
	}
	var body []byte // the whole body, when it was small enough to read first
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength > 0 && r.ContentLength <= replayableBody {
		// A small body is read whole, so that the transport can send it again on a new
		// connection when a pooled one turns out to be closed before anything was written.
		var err error
		if body, err = io.ReadAll(io.LimitReader(r.Body, r.ContentLength)); err != nil {
			t.m.rejected.WithLabelValues(RejectMalformed).Inc()
			http.Error(w, "understudy tap: reading the request body: "+err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	id := r.Header.Get(HeaderRequestID)
	if id == "" {
		id = t.bodyID(r, lr, body)
		r.Header.Set(HeaderRequestID, id)
	}
	w.Header().Set(HeaderRequestID, id)
	key := id
	if h := lr.Sampling.Header(); h != "" && r.Header.Get(h) != "" {
		key = r.Header.Get(h)
	}
	if invalid := t.cfg.Limits.ValidID(id) != nil; invalid || !sample.In(key, lr.Sampling.SampleRate()) {
		if invalid {
			t.producer.NotCaptured(ReasonInvalidRequestID)
		} else {
			t.producer.NotCaptured(ReasonSampledOut)
		}
		lr.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, lr)))
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
func (t *Tap) bodyID(r *http.Request, lr *liveRoute, buffered []byte) string {
	if lr.extract.Protocol() == predict.ProtocolOIPv2 && buffered != nil && len(buffered) <= lr.Capture.MaxBytes {
		if id := oipRequestID(buffered); id != "" {
			return id
		}
		return newRequestID()
	}
	if lr.extract.Protocol() == predict.ProtocolOIPv2 && r.Body != nil && r.ContentLength > 0 && r.ContentLength <= int64(lr.Capture.MaxBytes) {
		body, err := io.ReadAll(io.LimitReader(r.Body, r.ContentLength))
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(body), r.Body), r.Body}
		if id := oipRequestID(body); err == nil && id != "" {
			return id
		}
	}
	return newRequestID()
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
	r.x.done.Do(func() {
		r.t.enqueue(r.x.finish(r.t.now(), r.resp.StatusCode, r.resp.Header.Get("Content-Type"), r.body, nil))
	})
	return err
}

func (t *Tap) captureResponse(resp *http.Response) error {
	t.countRequest(resp.Request, resp.StatusCode)
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
	t.countRequest(r, code)
	x, ok := r.Context().Value(exchangeKey{}).(*exchange)
	if !ok {
		return
	}
	x.done.Do(func() {
		t.enqueue(x.finish(t.now(), code, "", capture{}, &schemas.Error{Kind: kind, Message: err.Error()}))
	})
}
