package upstream

import (
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkRoundTrip measures one keep-alive POST to a local fasthttp server through the
// package's client (stale-connection check before each request, status watch) and through a
// plain fasthttp.HostClient, side by side: the cost of the connection policy per request.
func BenchmarkRoundTrip(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"outputs":[{"data":[0.5]}]}`) }}
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()
	addr := ln.Addr().String()
	for _, c := range []struct {
		name   string
		client *fasthttp.HostClient
	}{
		{"policy", NewHostClient(Config{Addr: addr, IdleTimeout: time.Minute})},
		{"plain", &fasthttp.HostClient{Addr: addr, MaxIdleConnDuration: time.Minute}},
	} {
		b.Run(c.name, func(b *testing.B) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + addr + "/v2/models/m/infer")
			req.Header.SetMethod(fasthttp.MethodPost)
			req.SetBodyString(`{"inputs":[]}`)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.client.DoTimeout(req, resp, time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
