// Package app is the tap: an HTTP reverse proxy in front of the champion model that returns
// the champion's answer untouched and publishes an InferenceEvent for each request.
//
// Guarantees: the caller receives the champion's status, headers and body bytes unchanged,
// plus an X-Request-Id header; the Host header is passed through, not rewritten. Publishing
// never blocks or fails a request: events are handed to the Kafka client with TryProduce into
// a bounded buffer, and every request that yields no event is counted by reason in
// understudy_tap_events_dropped_total. Delivery to Kafka is at-most-once per request.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"golang.org/x/sync/errgroup"
)

// HeaderRequestID carries the request id to the champion and back to the caller.
const HeaderRequestID = "X-Request-Id"

// Tap is the capture proxy. Create it with New, start it with Run.
type Tap struct {
	cfg     Config
	logger  *slog.Logger
	now     func() time.Time
	client  *kgo.Client
	codecs  *schemas.Codecs
	extract predict.Extractor
	proxy   *httputil.ReverseProxy
	ops     *server.Server
	m       *metrics

	mu sync.Mutex
	ln net.Listener
}

// New wires a tap; it does not touch the network.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Tap, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	target, _ := url.Parse(cfg.ChampionURL)
	extract, _ := predict.Parse(cfg.Protocol)
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	cl, err := kgo.NewClient(append(cfg.Kafka.Opts(),
		kgo.MaxBufferedRecords(cfg.BufferRecords),
		kgo.ProducerLinger(5*time.Millisecond),
		kgo.DefaultProduceTopic(schemas.TopicInference),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	t := &Tap{
		cfg: cfg, logger: logger, now: time.Now, client: cl, codecs: codecs, extract: extract,
		ops: server.New(cfg.Ops, logger, reg),
		m:   newMetrics(reg),
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 256
	transport.ForceAttemptHTTP2 = false
	t.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host // never rewrite Host (unlike Envoy's "-shadow" suffix)
			pr.SetXForwarded()
		},
		Transport:      transport,
		BufferPool:     newBufferPool(),
		FlushInterval:  -1,
		ModifyResponse: t.captureResponse,
		ErrorHandler:   t.championError,
	}
	// Readiness is the proxy's: the tap keeps serving the champion when Kafka is down (events
	// are then dropped and counted), so Kafka trouble must not take it out of a load balancer.
	t.ops.AddCheck("proxy", func(context.Context) error {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.ln == nil {
			return errors.New("proxy not listening yet")
		}
		return nil
	})
	return t, nil
}

// Ops returns the operational server (for its address in tests).
func (t *Tap) Ops() *server.Server { return t.ops }

// Handler returns the proxy handler.
func (t *Tap) Handler() http.Handler { return http.HandlerFunc(t.serveHTTP) }

// Listen binds the proxy address and returns it; Run calls it when needed.
func (t *Tap) Listen() (net.Addr, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ln == nil {
		ln, err := net.Listen("tcp", t.cfg.ListenAddr)
		if err != nil {
			return nil, fmt.Errorf("proxy listen: %w", err)
		}
		t.ln = ln
	}
	return t.ln.Addr(), nil
}

// Run proxies until ctx ends, then stops accepting, drains in-flight requests and flushes
// buffered events, each within the shutdown timeout. It closes the Kafka client.
func (t *Tap) Run(ctx context.Context) error {
	defer t.client.Close()
	if _, err := t.Listen(); err != nil {
		return err
	}
	if err := registry.Configure(ctx, t.cfg.Registry, t.codecs); err != nil {
		return err
	}
	t.logger.Info("tap starting", "experiment", t.cfg.Experiment, "champion", t.cfg.ChampionURL, "proxy_addr", t.ln.Addr().String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return t.ops.Run(gctx) })
	g.Go(func() error {
		return server.Serve(gctx, t.logger.With("server", "proxy"), t.ln, t.Handler(), t.cfg.ShutdownTimeout)
	})
	err := g.Wait()
	fctx, cancel := context.WithTimeout(context.Background(), t.cfg.ShutdownTimeout)
	defer cancel()
	if ferr := t.client.Flush(fctx); ferr != nil {
		t.logger.Warn("events still buffered at shutdown were dropped", "err", ferr)
	}
	t.logger.Info("tap stopped")
	return err
}
