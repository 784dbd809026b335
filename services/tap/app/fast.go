package app

import (
	"errors"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/sample"
	"github.com/understudy-ml/understudy/services/platform/upstream"
	"github.com/valyala/fasthttp"
)

// The fast engine: fasthttp's server and HostClient. It costs about a third of the CPU of the
// standard engine per request (see docs/BENCHMARKS.md). Request bodies are read whole (up to
// proxy.max-body-bytes) before they are forwarded; response bodies stream to the caller as
// they arrive when they are large or of unknown length (chunked, server-sent events), and are
// forwarded whole otherwise. It speaks HTTP/1.1 to upstreams; h2c routes need the standard
// engine.

// smallBodyBytes is the largest response body of known length read whole rather than streamed.
const smallBodyBytes = 256 << 10

// Engines.
const (
	EngineFast = "fast"
	EngineStd  = "std"
)

func (t *Tap) newHostClient(target *url.URL, maxBody int) *fasthttp.HostClient {
	addr, tls := upstream.Target(target)
	return upstream.NewHostClient(upstream.Config{
		Addr: addr, TLS: tls, MaxConns: 4096,
		IdleTimeout: t.cfg.UpstreamIdleTimeout, StreamTimeout: t.cfg.StreamTimeout,
		MaxBodyBytes: maxBody, StreamBody: true,
	})
}

func (t *Tap) newFastServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                       t.serveFast,
		Name:                          "",
		NoDefaultServerHeader:         true,
		NoDefaultDate:                 true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: false,
		MaxRequestBodySize:            t.cfg.MaxBodyBytes,
		ReadTimeout:                   t.cfg.ReadTimeout,
		IdleTimeout:                   t.cfg.IdleTimeout,
		ErrorHandler:                  t.fastError,
		ReadBufferSize:                16 << 10,
		CloseOnShutdown:               true,
	}
}

func (t *Tap) serveFast(ctx *fasthttp.RequestCtx) {
	g := t.routing.Load()
	req, resp := &ctx.Request, &ctx.Response
	path := string(ctx.Path())
	i := g.table.Match(string(ctx.Host()), path)
	if i < 0 {
		t.producer.NotCaptured(ReasonNoRoute)
		ctx.Error("understudy tap: no route for this host and path", fasthttp.StatusNotFound)
		return
	}
	lr := g.routes[i]
	if !req.Header.IsHTTP11() && string(req.Header.Protocol()) != "HTTP/1.0" {
		t.m.rejected.WithLabelValues(RejectUnsupportedVersion).Inc()
		ctx.Error("understudy tap: HTTP version not supported", fasthttp.StatusHTTPVersionNotSupported)
		return
	}
	id := string(req.Header.Peek(HeaderRequestID))
	if id == "" {
		if lr.extract.Protocol() == predict.ProtocolOIPv2 && len(req.Body()) <= lr.Capture.MaxBytes {
			id = oipRequestID(req.Body())
		}
		if id == "" {
			id = newRequestID()
		}
		req.Header.Set(HeaderRequestID, id)
	}
	key := id
	if h := lr.Sampling.Header(); h != "" {
		if v := req.Header.Peek(h); len(v) > 0 {
			key = string(v)
		}
	}
	sampled := sample.In(key, lr.Sampling.SampleRate())
	validID := t.cfg.Limits.ValidID(id) == nil
	if ip := ctx.RemoteIP(); ip != nil {
		if prior := req.Header.Peek("X-Forwarded-For"); len(prior) > 0 {
			req.Header.Set("X-Forwarded-For", string(prior)+", "+ip.String())
		} else {
			req.Header.Set("X-Forwarded-For", ip.String())
		}
	}
	var f *finished
	switch {
	case !validID:
		t.producer.NotCaptured(ReasonInvalidRequestID)
	case sampled:
		f = &finished{
			id: id, route: lr, start: t.now(), method: string(req.Header.Method()), path: path,
			headers: capturedHeaderValues(func(name string) string { return string(req.Header.Peek(name)) }),
			reqBody: capture{limit: lr.Capture.MaxBytes}, respBody: capture{limit: lr.Capture.MaxBytes},
		}
		f.reqBody.write(req.Body())
	default:
		t.producer.NotCaptured(ReasonSampledOut)
	}
	// The champion answers into a separate response: its body stream (if any) must outlive
	// this handler, and setting a new stream on a response closes the one it holds.
	up := fasthttp.AcquireResponse()
	var err error
	if lr.Champion.Timeout > 0 {
		err = lr.fast.DoTimeout(req, up, lr.Champion.Timeout)
	} else {
		err = lr.fast.Do(req, up)
	}
	if err != nil {
		fasthttp.ReleaseResponse(up)
		kind, code := "connect", fasthttp.StatusBadGateway
		if errors.Is(err, fasthttp.ErrTimeout) {
			kind, code = "timeout", fasthttp.StatusGatewayTimeout
		}
		resp.Header.Set(HeaderRequestID, id)
		resp.SetStatusCode(code)
		t.m.requests.WithLabelValues(lr.Name, statusClass(code)).Inc()
		if f != nil {
			f.latency, f.status, f.failure = t.now().Sub(f.start), code, &schemas.Error{Kind: kind, Message: err.Error()}
			t.enqueue(f)
		}
		return
	}
	up.Header.CopyTo(&resp.Header)
	resp.Header.Set(HeaderRequestID, id)
	t.m.requests.WithLabelValues(lr.Name, statusClass(up.StatusCode())).Inc()
	if cl := up.Header.ContentLength(); cl >= 0 && cl <= smallBodyBytes {
		// A small body of known length is read whole: cheaper than streaming it.
		_, err := io.CopyN(resp.BodyWriter(), up.BodyStream(), int64(cl))
		_ = up.CloseBodyStream()
		fasthttp.ReleaseResponse(up)
		if err != nil {
			resp.ResetBody()
			resp.SetStatusCode(fasthttp.StatusBadGateway)
		}
		if f != nil {
			f.status, f.respType = resp.StatusCode(), string(resp.Header.ContentType())
			if err != nil {
				f.failure = &schemas.Error{Kind: "connect", Message: "reading the champion's body: " + err.Error()}
			}
			f.respBody.write(resp.Body())
			f.latency = t.now().Sub(f.start)
			t.enqueue(f)
		}
		return
	}
	if up.IsBodyStream() {
		// Large or unknown-length body: stream it through, capture as it passes, publish when
		// the server has written it all and closes the stream.
		resp.SetBodyStream(&fastTee{r: up.BodyStream(), up: up, f: f, t: t}, up.Header.ContentLength())
		return
	}
	resp.SetBody(up.Body())
	if f != nil {
		f.status, f.respType = up.StatusCode(), string(up.Header.ContentType())
		f.respBody.write(up.Body())
		f.latency = t.now().Sub(f.start)
		t.enqueue(f)
	}
	fasthttp.ReleaseResponse(up)
}

// Reasons a request is rejected before it is proxied (understudy_tap_requests_rejected_total).
const (
	RejectBodyTooLarge       = "body_too_large"
	RejectHeadersTooLarge    = "headers_too_large"
	RejectUnsupportedVersion = "unsupported_version"
	RejectReadTimeout        = "read_timeout"
	RejectMalformed          = "malformed"
)

// fastError answers requests fasthttp could not read: 413 for a body over
// proxy.max-body-bytes, 431 for headers over the read buffer, 408 for a caller too slow to
// send its request, 400 otherwise; each is counted by reason.
func (t *Tap) fastError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	reason, code := RejectMalformed, fasthttp.StatusBadRequest
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		reason, code = RejectBodyTooLarge, fasthttp.StatusRequestEntityTooLarge
	case errors.As(err, &small):
		reason, code = RejectHeadersTooLarge, fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.As(err, &ne) && ne.Timeout():
		reason, code = RejectReadTimeout, fasthttp.StatusRequestTimeout
	case strings.Contains(err.Error(), "unsupported http version"):
		// fasthttp reports this only as text.
		reason, code = RejectUnsupportedVersion, fasthttp.StatusHTTPVersionNotSupported
	}
	t.m.rejected.WithLabelValues(reason).Inc()
	markLinger(ctx.Conn()) // let the answer reach a caller still sending (linger.go)
	ctx.Error("understudy tap: "+fasthttp.StatusMessage(code), code)
}

// fastTee streams the champion's body to the caller, captures it as it passes (when the
// exchange is sampled) and, on Close, publishes the exchange and releases the champion's
// response and connection.
type fastTee struct {
	r    io.Reader
	up   *fasthttp.Response
	f    *finished // nil when not sampled
	t    *Tap
	once sync.Once
}

func (s *fastTee) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if s.f != nil {
		s.f.respBody.write(p[:n])
	}
	return n, err
}

func (s *fastTee) Close() error {
	var err error
	s.once.Do(func() {
		if s.f != nil {
			s.f.status, s.f.respType = s.up.StatusCode(), string(s.up.Header.ContentType())
			s.f.latency = s.t.now().Sub(s.f.start)
			s.t.enqueue(s.f)
		}
		err = s.up.CloseBodyStream()
		fasthttp.ReleaseResponse(s.up)
	})
	return err
}
