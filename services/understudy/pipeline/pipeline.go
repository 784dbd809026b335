// Package pipeline runs the four Understudy services (tap, invoker, joiner, aggregator) in one
// process against a given Kafka and Postgres. It is the composition root of `understudy demo`
// and of the end-to-end tests; in production each service runs as its own binary. Each
// service keeps its own Prometheus registry and operational server, as it would alone.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	aggregator "github.com/understudy-ml/understudy/services/aggregator/app"
	invoker "github.com/understudy-ml/understudy/services/invoker/app"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
	tap "github.com/understudy-ml/understudy/services/tap/app"
	"golang.org/x/sync/errgroup"
)

// Options says where the pipeline's dependencies are and what it shadows.
type Options struct {
	Brokers     string        // Kafka seed brokers, comma-separated
	DatabaseURL string        // Postgres connection string
	Experiment  string        // experiment name
	ChampionURL string        // champion model server base URL
	ShadowURL   string        // shadow model server base URL
	ShadowName  string        // shadow name (default "candidate")
	JoinWindow  time.Duration // joiner window (default 60s)
	CountWindow time.Duration // aggregator window (default 1m)
	Logger      *slog.Logger  // nil: discard
}

// Pipeline is a running set of the four services.
type Pipeline struct {
	// ProxyURL is the tap's address: send requests for the champion here.
	ProxyURL string
	// Registries holds each service's metrics, by service name.
	Registries map[string]*prometheus.Registry
	// OpsURLs holds each service's operational server base URL, by service name.
	OpsURLs map[string]string

	cancel context.CancelFunc
	group  *errgroup.Group
}

type runner interface {
	Run(ctx context.Context) error
}

// Start wires and starts the services; they run until ctx ends or Stop is called.
func Start(ctx context.Context, o Options) (*Pipeline, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ShadowName == "" {
		o.ShadowName = "candidate"
	}
	p := &Pipeline{Registries: map[string]*prometheus.Registry{}, OpsURLs: map[string]string{}}
	for _, name := range []string{"tap", "invoker", "joiner", "aggregator"} {
		p.Registries[name] = prometheus.NewRegistry()
	}
	const local = "127.0.0.1:0"

	tc := tap.NewDefaultConfig()
	tc.Kafka.Brokers, tc.Ops.ListenAddr, tc.ListenAddr = o.Brokers, local, local
	tc.ChampionURL, tc.Experiment, tc.ModelName = o.ChampionURL, o.Experiment, "champion"
	t, err := tap.New(tc, o.Logger.With("service", "tap"), p.Registries["tap"])
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	addr, err := t.Listen()
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	p.ProxyURL = "http://" + addr.String()

	ic := invoker.NewDefaultConfig()
	ic.Kafka.Brokers, ic.Ops.ListenAddr = o.Brokers, local
	ic.ShadowURL, ic.ShadowName, ic.Experiment, ic.ShadowModel = o.ShadowURL, o.ShadowName, o.Experiment, o.ShadowName
	ic.InstanceID = "pipeline-" + o.Experiment // one transactional id per in-process pipeline
	inv, err := invoker.New(ic, o.Logger.With("service", "invoker"), p.Registries["invoker"])
	if err != nil {
		return nil, fmt.Errorf("invoker: %w", err)
	}

	jc := joiner.NewDefaultConfig()
	jc.Kafka.Brokers, jc.Ops.ListenAddr, jc.ExpectedShadows, jc.DatabaseURL = o.Brokers, local, o.ShadowName, o.DatabaseURL
	jc.InstanceID = "pipeline-" + o.Experiment
	if o.JoinWindow > 0 {
		jc.Window = o.JoinWindow
	}
	j, err := joiner.New(jc, o.Logger.With("service", "joiner"), p.Registries["joiner"])
	if err != nil {
		return nil, fmt.Errorf("joiner: %w", err)
	}

	ac := aggregator.NewDefaultConfig()
	ac.Kafka.Brokers, ac.Ops.ListenAddr, ac.DatabaseURL = o.Brokers, local, o.DatabaseURL
	if o.CountWindow > 0 {
		ac.Window = o.CountWindow
	}
	a, err := aggregator.New(ac, o.Logger.With("service", "aggregator"), p.Registries["aggregator"])
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}

	ops := map[string]interface{ Listen() (net.Addr, error) }{
		"tap": t.Ops(), "invoker": inv.Ops(), "joiner": j.Ops(), "aggregator": a.Ops(),
	}
	for name, s := range ops {
		addr, err := s.Listen()
		if err != nil {
			return nil, fmt.Errorf("%s ops: %w", name, err)
		}
		p.OpsURLs[name] = "http://" + addr.String()
	}

	ctx, p.cancel = context.WithCancel(ctx)
	p.group, ctx = errgroup.WithContext(ctx)
	for name, r := range map[string]runner{"tap": t, "invoker": inv, "joiner": j, "aggregator": a} {
		p.group.Go(func() error {
			if err := r.Run(ctx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		})
	}
	return p, nil
}

// Stop stops every service, waits for them to drain, and returns the first error any of
// them stopped with.
func (p *Pipeline) Stop() error {
	p.cancel()
	err := p.group.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Wait blocks until a service fails or the pipeline's context ends.
func (p *Pipeline) Wait() error { return p.group.Wait() }
