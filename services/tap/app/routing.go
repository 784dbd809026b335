package app

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"

	"github.com/understudy-ml/understudy/services/platform/upstream"
	"github.com/valyala/fasthttp"

	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/tap/internal/redact"
	"github.com/understudy-ml/understudy/services/tap/internal/route"
)

// routing is one immutable generation of the routing table with its proxies. A reload builds a
// new one and swaps it in; requests in flight finish on the generation they started with.
type routing struct {
	table  *route.Table
	routes []*liveRoute // parallel to table.Routes()
}

// liveRoute is a route with what serving it needs.
type liveRoute struct {
	route.Route
	proxy     *httputil.ReverseProxy // standard engine
	transport *http.Transport
	fast      *fasthttp.HostClient // fast engine
	extract   predict.Extractor
	redact    redact.Rules
}

func (t *Tap) buildRouting(routes []route.Route) (*routing, error) {
	table := route.NewTable(routes)
	g := &routing{table: table}
	var errs []error
	for _, r := range table.Routes() {
		lr, err := t.buildRoute(r)
		if err != nil {
			errs = append(errs, fmt.Errorf("route %q: %w", r.Name, err))
			continue
		}
		g.routes = append(g.routes, lr)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return g, nil
}

func (t *Tap) buildRoute(r route.Route) (*liveRoute, error) {
	target, err := url.Parse(r.Champion.URL)
	if err != nil {
		return nil, fmt.Errorf("champion.url: %w", err)
	}
	extract, err := predict.Parse(r.Champion.Protocol)
	if err != nil {
		return nil, err
	}
	rules, err := redact.Compile(r.Redaction.Remove, r.Redaction.Hash, []byte(t.cfg.RedactionKey))
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = 1024
	tr.MaxIdleConnsPerHost = 512
	tr.ResponseHeaderTimeout = r.Champion.Timeout
	tr.IdleConnTimeout = t.cfg.UpstreamIdleTimeout
	tr.DialContext = upstream.DialContext(30 * time.Second) // no reuse after a 5xx, see package upstream
	if r.Champion.H2C {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	lr := &liveRoute{Route: r, transport: tr, extract: extract, redact: rules}
	if t.cfg.Engine == EngineFast {
		lr.fast = t.newHostClient(target, t.cfg.MaxBodyBytes)
	}
	lr.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // never rewrite Host (unlike Envoy's "-shadow" suffix)
			pr.SetXForwarded()
		},
		Transport:  tr,
		BufferPool: t.buffers,
		// Zero: no periodic flushing. ReverseProxy still flushes streaming responses (unknown
		// length, text/event-stream) after every write; flushing every response that way costs
		// a syscall per write.
		FlushInterval:  0,
		ModifyResponse: t.captureResponse,
		ErrorHandler:   t.championError,
	}
	return lr, nil
}

// close releases the idle upstream connections of a generation that is no longer served.
func (g *routing) close() {
	for _, r := range g.routes {
		r.transport.CloseIdleConnections()
		if r.fast != nil {
			r.fast.CloseIdleConnections()
		}
	}
}
