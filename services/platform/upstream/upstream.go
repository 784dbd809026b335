// Package upstream builds the HTTP/1.1 clients (fasthttp HostClients) with which the tap calls
// champions and the invoker calls shadows. It owns one policy for connections to model
// servers, so that no caller ever pays for a connection the server already gave up:
//
//   - Idle keep-alive connections are closed after IdleTimeout, below common server defaults
//     (uvicorn and Node 5 s, gunicorn 2 s).
//   - Before a pooled connection carries a new request it is checked without blocking (a
//     MSG_PEEK read): a connection the server closed (after its idle timeout, or after an error
//     response such as uvicorn's 500) is discarded and the request goes out on another one.
//     Nothing of the request was sent, so this is safe whatever the method.
//   - No other retries: a request that reached the upstream is never sent twice (fasthttp's
//     own default retries idempotent requests up to five times).
//   - HeaderTimeout bounds the time from sending the request to the first byte of the
//     response; StreamTimeout then bounds the rest of it (headers and body), so a long
//     streamed answer is not cut at the route timeout.
package upstream

import (
	"errors"
	"net"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// ErrStaleConn is returned (and retried on another connection) when a pooled connection
// turns out to have been closed by the upstream before the request was written to it.
var ErrStaleConn = errors.New("upstream closed the idle connection before the request was sent")

// DefaultIdleTimeout is below the keep-alive timeouts of uvicorn (5 s), Node (5 s) and
// gunicorn (2 s).
const DefaultIdleTimeout = time.Second

// maxStaleRetries bounds how many pooled connections one request may find closed.
const maxStaleRetries = 16

// Config describes one upstream.
type Config struct {
	Addr          string        // host:port
	TLS           bool          // https
	MaxConns      int           // connections at most (0: fasthttp's default)
	IdleTimeout   time.Duration // idle keep-alive connections are closed after this (0: DefaultIdleTimeout)
	HeaderTimeout time.Duration // request sent → first response byte; set per call with DoTimeout
	StreamTimeout time.Duration // first response byte → end of the body (0: HeaderTimeout bounds it all)
	MaxBodyBytes  int           // largest response body read (0: fasthttp's default)
	StreamBody    bool          // hand large response bodies over as streams
}

// NewHostClient returns a client for cfg. Call it with DoTimeout(req, resp, HeaderTimeout).
func NewHostClient(cfg Config) *fasthttp.HostClient {
	idle := cfg.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	stream := cfg.StreamTimeout
	return &fasthttp.HostClient{
		Addr:                      cfg.Addr,
		IsTLS:                     cfg.TLS,
		MaxConns:                  cfg.MaxConns,
		MaxIdleConnDuration:       idle,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		MaxResponseBodySize:       cfg.MaxBodyBytes,
		StreamResponseBody:        cfg.StreamBody,
		MaxIdemponentCallAttempts: maxStaleRetries,
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
			return false, errors.Is(err, ErrStaleConn)
		},
		DialTimeout: func(addr string, timeout time.Duration) (net.Conn, error) {
			dial := fasthttp.Dial // fasthttp's default dial timeout when the call has none
			if timeout > 0 {
				dial = func(addr string) (net.Conn, error) { return fasthttp.DialTimeout(addr, timeout) }
			}
			c, err := dial(addr)
			if err != nil {
				return nil, err
			}
			return wrap(c, stream), nil
		},
	}
}

// conn checks a reused connection before each request and stretches the read deadline once
// the response has started.
type conn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection offers no file descriptor
	stream time.Duration

	deadline  time.Time // the read deadline fasthttp set for the current response
	used      bool      // a request went out on it before
	responded bool      // bytes were read since the last write: the next write starts a new request
	extended  bool      // the read deadline was stretched for the current response
}

func wrap(c net.Conn, stream time.Duration) *conn {
	w := &conn{Conn: c, stream: stream}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
		}
	}
	return w
}

func (c *conn) Write(p []byte) (int, error) {
	if c.used && c.responded && c.closedByPeer() {
		return 0, ErrStaleConn
	}
	c.used, c.responded, c.extended = true, false, false
	return c.Conn.Write(p)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.responded = true
		if c.stream > 0 && !c.extended {
			c.extended = true
			if d := time.Now().Add(c.stream); !c.deadline.IsZero() && d.After(c.deadline) {
				_ = c.Conn.SetReadDeadline(d)
			}
		}
	}
	return n, err
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.deadline = t
	return c.Conn.SetDeadline(t)
}

// closedByPeer reports whether the peer closed (or reset) the connection or sent bytes
// before any request, without blocking and without consuming anything.
func (c *conn) closedByPeer() bool {
	if c.raw == nil {
		return false
	}
	var closed bool
	var buf [1]byte
	err := c.raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Only "nothing to read yet" means alive. No error means a FIN (0 bytes) or bytes
		// nobody asked for (a late error response): out of step either way; any other error
		// (a reset) makes it unusable.
		closed = !errors.Is(rerr, syscall.EAGAIN) && !errors.Is(rerr, syscall.EINTR)
		return true // never wait for readiness
	})
	return closed || err != nil
}
