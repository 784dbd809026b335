package app

import (
	"io"
	"net"
	"sync/atomic"
	"time"
)

// The fast engine refuses a request it cannot read (body over proxy.max-body-bytes, headers
// over the read buffer) while the caller is still sending it. Closing a socket with unread
// input makes the kernel answer with a reset, and a caller that writes its whole body before
// reading then sees "connection reset" instead of the 413 or 431. A connection marked for
// lingering therefore closes its write side first, drains what the caller still sends for a
// moment, and only then closes (nginx's lingering_close).

// Lingering bounds: a caller gets this long, and may send this much, after the answer.
const (
	lingerTime  = 2 * time.Second
	lingerBytes = 64 << 20
)

// lingerListener wraps accepted TCP connections so that they can linger on close.
type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		return &lingerConn{TCPConn: tc}, nil
	}
	return c, nil
}

// lingerConn is a TCP connection that can be marked to linger when closed.
type lingerConn struct {
	*net.TCPConn
	linger atomic.Bool
	closed atomic.Bool
}

// markLinger makes the next Close of c linger; other connection types are left alone.
func markLinger(c net.Conn) {
	if lc, ok := c.(*lingerConn); ok {
		lc.linger.Store(true)
	}
}

// Close closes at once, or, when marked, sends FIN and drains the input in the background
// for at most lingerTime and lingerBytes before closing.
func (c *lingerConn) Close() error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	if !c.linger.Load() || c.CloseWrite() != nil {
		return c.TCPConn.Close()
	}
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(lingerTime))
		_, _ = io.CopyN(io.Discard, c.TCPConn, lingerBytes)
		_ = c.TCPConn.Close()
	}()
	return nil
}
