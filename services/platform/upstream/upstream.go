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
	"context"
	"errors"
	"net"
	"net/url"
	"sync"
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

// maxConnWait is how long a request waits for a connection when MaxConns are counted as in
// use. fasthttp's idle-connection cleaner takes idle connections out of the pool before it
// closes them and uncounts them, so for a moment the pool is empty while the count is full:
// without a wait, a request arriving then fails at once with ErrNoFreeConns although no call
// is in flight (seen as "connect" failures of a healthy shadow). The request's own timeout
// still bounds the wait.
const maxConnWait = 5 * time.Second

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

// Target returns the Config fields of an http or https URL: its host:port (the scheme's
// default port when it names none) and whether it is TLS.
func Target(u *url.URL) (addr string, tls bool) {
	addr, tls = u.Host, u.Scheme == "https"
	if _, _, err := net.SplitHostPort(addr); err != nil {
		if tls {
			return addr + ":443", tls
		}
		return addr + ":80", tls
	}
	return addr, tls
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
		MaxConnWaitTimeout:        maxConnWait,
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
			return wrap(c, stream, true), nil
		},
	}
}

// conn checks a reused connection before each request and stretches the read deadline once
// the response has started. net/http reads and writes a connection from two goroutines, so
// the state is guarded by mu (never held during I/O).
type conn struct {
	net.Conn
	raw    syscall.RawConn // nil when the connection offers no file descriptor, or peek is off
	stream time.Duration

	mu         sync.Mutex
	deadline   time.Time // the read deadline the client set for the current response
	used       bool      // a request went out on it before
	responded  bool      // bytes were read since the last write: the next write starts a new request
	extended   bool      // the read deadline was stretched for the current response
	closeAfter bool      // the last answer was a 5xx: servers often close after one (uvicorn does)
	lastRead   time.Time // when bytes last arrived
}

// peekAfter is how long a connection must have been quiet before it is checked for a close:
// servers close idle connections after seconds, so a connection in steady use skips the
// system call (a 5xx is caught by closeAfter whatever the timing).
const peekAfter = 10 * time.Millisecond

// wrap returns c checked before reuse. peek enables the non-blocking check for a closed
// connection, for clients that do not read idle connections themselves (fasthttp); net/http
// reads every idle connection in the background and notices a close by itself.
func wrap(c net.Conn, stream time.Duration, peek bool) *conn {
	w := &conn{Conn: c, stream: stream}
	if sc, ok := c.(syscall.Conn); ok && peek {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
		}
	}
	return w
}

func (c *conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	reuse := c.used && c.responded
	stale := reuse && c.closeAfter
	quiet := reuse && time.Since(c.lastRead) > peekAfter
	c.mu.Unlock()
	if stale || (quiet && c.closedByPeer()) {
		return 0, ErrStaleConn
	}
	c.mu.Lock()
	if reuse || !c.used {
		c.used, c.responded, c.extended, c.closeAfter = true, false, false, false
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n == 0 {
		return n, err
	}
	now := time.Now()
	c.mu.Lock()
	first := !c.responded
	c.responded, c.lastRead = true, now
	if first {
		// The first bytes of an answer: its status line.
		c.closeAfter = n >= 10 && string(p[:7]) == "HTTP/1." && p[9] == '5'
	}
	var extend time.Time
	if c.stream > 0 && !c.extended {
		c.extended = true
		if d := now.Add(c.stream); !c.deadline.IsZero() && d.After(c.deadline) {
			extend = d
		}
	}
	c.mu.Unlock()
	if !extend.IsZero() {
		_ = c.Conn.SetReadDeadline(extend)
	}
	return n, err
}

func (c *conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetReadDeadline(t)
}

func (c *conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

// DialContext returns a dial function for net/http transports (http.Transport.DialContext)
// whose connections follow the package's policy: after a 5xx answer (servers such as uvicorn
// close the connection after one, without saying so) the connection carries no further
// request; the transport gets a write error before anything is written and retries on a new
// connection when the request can be replayed (no body, or GetBody set).
func DialContext(timeout time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return wrap(c, 0, false), nil
	}
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
