// Package app is the tap: an HTTP reverse proxy in front of champion models that returns the
// champion's answer untouched and publishes an InferenceEvent for each captured request.
//
// Guarantees: the caller receives the champion's status, headers and body bytes unchanged,
// plus an X-Request-Id header; Host is passed through, not rewritten. Capturing never blocks,
// slows or fails a request: bodies are copied as they stream (up to the route's capture
// limit), and events are handed to the producer, which never waits for Kafka (see package
// producer for its spool and delivery guarantees). Every proxied request that yields no event
// is counted by reason in understudy_events_not_captured_total. Authorization and Cookie
// headers are never captured; configured JSON paths are removed or hashed before an event
// leaves the process, and a body that cannot be redacted is not captured at all.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/launch"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/svc"
	"github.com/understudy-ml/understudy/services/tap/producer"
	"golang.org/x/sync/errgroup"
)

// HeaderRequestID carries the request id to the champion and back to the caller.
const HeaderRequestID = "X-Request-Id"

// Tap is the capture proxy. Create it with New, start it with Run.
type Tap struct {
	cfg      Config
	logger   *slog.Logger
	now      func() time.Time
	codecs   *schemas.Codecs
	producer *producer.Producer
	ops      *server.Server
	m        *metrics
	buffers  *bufferPool
	routing  atomic.Pointer[routing]
	queue    *handoff

	mu sync.Mutex
	ln net.Listener

	closing sync.Once
}

// New wires a tap; it does not touch the network.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Tap, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	routes, err := cfg.loadRoutes() // before anything that needs releasing
	if err != nil {
		return nil, svc.FileError("routes.file", err)
	}
	pc := cfg.Producer
	pc.Kafka = cfg.Kafka
	prod, err := producer.New(pc, codecs.Inference, logger, reg)
	if err != nil {
		return nil, err
	}
	t := &Tap{
		cfg: cfg, logger: logger, now: time.Now, codecs: codecs, producer: prod,
		ops: server.New(cfg.Ops, logger, reg), m: newMetrics(reg), buffers: newBufferPool(),
		queue: newHandoff(cfg.Producer.BufferRecords, publishGather),
	}
	g, err := t.buildRouting(routes)
	if err != nil {
		_ = prod.Close(context.Background()) // nothing was published: only the client and spool to release
		return nil, svc.FileError("routes.file", err)
	}
	t.routing.Store(g)
	t.ops.AddCheck("proxy", func(context.Context) error {
		t.mu.Lock()
		defer t.mu.Unlock()
		if t.ln == nil {
			return errors.New("proxy not listening yet")
		}
		return nil
	})
	// Kafka trouble does not stop the proxy (events are spooled or counted), so by default it
	// shows in /readyz without failing it; ready.require-kafka makes it fail.
	kafkaCheck := func(ctx context.Context) error { return prod.Ready(ctx) }
	if cfg.RequireKafka {
		t.ops.AddCheck("kafka", kafkaCheck)
	} else {
		t.ops.AddInfo("kafka", kafkaCheck)
	}
	return t, nil
}

// Ops returns the operational server.
func (t *Tap) Ops() *server.Server { return t.ops }

// Handler returns the standard engine's proxy handler (Run serves the configured engine).
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

// Reload reads the routes file again and swaps the new routes in; requests in flight finish
// on the old ones. An invalid file changes nothing and the error lists every problem.
func (t *Tap) Reload() error {
	if t.cfg.RoutesFile == "" {
		return errors.New("reload: no routes file configured")
	}
	routes, err := t.cfg.loadRoutes()
	if err != nil {
		t.m.reloads.WithLabelValues("rejected").Inc()
		return fmt.Errorf("reload rejected, keeping the current routes: %w", err)
	}
	g, err := t.buildRouting(routes)
	if err != nil {
		t.m.reloads.WithLabelValues("rejected").Inc()
		return fmt.Errorf("reload rejected, keeping the current routes: %w", err)
	}
	old := t.routing.Swap(g)
	old.close()
	t.m.reloads.WithLabelValues("applied").Inc()
	t.logger.Info("routes reloaded", "routes", len(routes))
	return nil
}

// Run proxies until ctx ends, then stops accepting, drains in-flight requests and flushes
// buffered events, each within the shutdown timeout. With a routes file, SIGHUP reloads it.
func (t *Tap) Run(ctx context.Context) error {
	if _, err := t.Listen(); err != nil {
		return err
	}
	if err := registry.Configure(ctx, t.cfg.Registry, t.codecs); err != nil {
		return err
	}
	t.logger.Info("tap starting", "proxy_addr", t.ln.Addr().String(), "routes", len(t.routing.Load().routes), "spool_dir", t.cfg.Producer.SpoolDir)
	var publisher sync.WaitGroup
	publisher.Go(func() { t.queue.run(t.publishBatch) })
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return t.ops.Run(gctx) })
	g.Go(func() error { return t.producer.Run(gctx) })
	g.Go(func() error {
		if t.cfg.Engine == EngineFast {
			return t.serveFastUntil(gctx)
		}
		return server.Serve(gctx, t.logger.With("server", "proxy"), t.ln, t.Handler(), t.cfg.ShutdownTimeout)
	})
	if t.cfg.RoutesFile != "" {
		g.Go(func() error { launch.ReloadOnHangup(gctx, t.logger, "routes", t.Reload); return nil })
	}
	err := g.Wait()
	// The proxy has drained: no handler can enqueue any more.
	t.queue.close()
	publisher.Wait()
	if cerr := t.Close(); cerr != nil {
		t.logger.Warn("events still buffered at shutdown went to the spool or were counted as lost", "err", cerr)
	}
	t.logger.Info("tap stopped")
	return err
}

// Close releases what New built: it flushes buffered events within the shutdown timeout
// (to the spool or counted as lost beyond it), closes the Kafka client, the spool, the proxy
// listener if bound and the upstream connections. Run calls it once the proxy has drained; it
// is idempotent and safe before Run, and returns the flush error the first time.
func (t *Tap) Close() error {
	var err error
	t.closing.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), t.cfg.ShutdownTimeout)
		defer cancel()
		err = t.producer.Close(ctx)
		t.mu.Lock()
		if t.ln != nil {
			_ = t.ln.Close() // already closed when Run served it
		}
		t.mu.Unlock()
		t.routing.Load().close()
		t.ops.Close()
	})
	return err
}

// serveFastUntil serves the fast engine until ctx ends, then drains within the shutdown timeout.
func (t *Tap) serveFastUntil(ctx context.Context) error {
	srv := t.newFastServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lingerListener{t.ln}) }()
	t.logger.Info("proxy listening", "addr", t.ln.Addr().String(), "engine", EngineFast)
	select {
	case err := <-errc:
		return fmt.Errorf("proxy serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), t.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.ShutdownWithContext(sctx); err != nil {
		return fmt.Errorf("proxy shutdown: %w", err)
	}
	return nil
}
