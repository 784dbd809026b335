package main

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// latencyProxy forwards TCP connections to a target and delays every chunk, in both
// directions, by an adjustable latency without limiting throughput (chunks are pipelined).
type latencyProxy struct {
	ln     net.Listener
	target string
	delay  atomic.Int64
	wg     sync.WaitGroup
}

func newLatencyProxy(addr, target string) *latencyProxy {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	p := &latencyProxy{ln: ln, target: target}
	p.wg.Go(p.accept)
	return p
}

// Set changes the added one-way latency of new chunks.
func (p *latencyProxy) Set(d time.Duration) { p.delay.Store(int64(d)) }

func (p *latencyProxy) Close() { _ = p.ln.Close(); p.wg.Wait() }

func (p *latencyProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.serve(c)
	}
}

func (p *latencyProxy) serve(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = c.Close()
		return
	}
	go p.pipe(up, c)
	p.pipe(c, up)
}

type chunk struct {
	b  []byte
	at time.Time
}

func (p *latencyProxy) pipe(dst, src net.Conn) {
	ch := make(chan chunk, 1024)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				ch <- chunk{buf[:n], time.Now().Add(time.Duration(p.delay.Load()))}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range ch {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			break
		}
	}
	_ = dst.Close()
	_ = src.Close()
	_, _ = io.Copy(io.Discard, src)
}
