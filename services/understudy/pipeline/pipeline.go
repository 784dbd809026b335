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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	aggregator "github.com/understudy-ml/understudy/services/aggregator/app"
	invoker "github.com/understudy-ml/understudy/services/invoker/app"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
	"github.com/understudy-ml/understudy/services/platform/segment"
	tap "github.com/understudy-ml/understudy/services/tap/app"
	"golang.org/x/sync/errgroup"
)

// Options says where the pipeline's dependencies are and what it shadows.
type Options struct {
	Brokers     string        // Kafka seed brokers, comma-separated
	DatabaseURL string        // Postgres connection string
	Experiment  string        // experiment name
	ChampionURL string        // champion model server base URL
	ShadowURL   string        // shadow model server base URL (one shadow; or use Shadows)
	ShadowName  string        // shadow name (default "candidate")
	Shadows     []Shadow      // several shadows (replaces ShadowURL and ShadowName)
	JoinWindow  time.Duration // joiner window (default 60s)
	CountWindow time.Duration // aggregator window (default 1m)
	// Segments are the experiment's segment keys (none when empty; with ShadowURL, they
	// make it the one shadow of an experiments file).
	Segments []segment.Key
	// Aggregator, if not nil, adjusts the aggregator's configuration (alerts, webhooks, API).
	Aggregator func(*aggregator.Config)
	Logger     *slog.Logger // nil: discard
}

// Shadow is one shadow model of the experiment.
type Shadow struct {
	Name string
	URL  string
	Role string // candidate (default) or noise_baseline
}

// experimentsFile writes the experiments file the invoker, joiner and aggregator read, for
// several shadows.
func experimentsFile(dir string, o Options) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "experiments:\n  - name: %q\n", o.Experiment)
	if o.JoinWindow > 0 {
		fmt.Fprintf(&b, "    join: {window: %s}\n", o.JoinWindow)
	}
	if len(o.Segments) > 0 {
		b.WriteString("    segments:\n      keys:\n")
		for _, k := range o.Segments {
			fmt.Fprintf(&b, "        - {name: %q", k.Name)
			for _, f := range [][2]string{{"header", k.Header}, {"pointer", k.Pointer}, {"model_version", k.ModelVersion}} {
				if f[1] != "" {
					fmt.Fprintf(&b, ", %s: %q", f[0], f[1])
				}
			}
			if len(k.Buckets) > 0 {
				edges := make([]string, len(k.Buckets))
				for i, e := range k.Buckets {
					edges[i] = strconv.FormatFloat(e, 'g', -1, 64)
				}
				fmt.Fprintf(&b, ", buckets: [%s]", strings.Join(edges, ", "))
			}
			b.WriteString("}\n")
		}
	}
	b.WriteString("    shadows:\n")
	for _, s := range o.Shadows {
		role := s.Role
		if role == "" {
			role = "candidate"
		}
		fmt.Fprintf(&b, "      - {name: %q, url: %q, role: %s, version: %q}\n", s.Name, s.URL, role, s.Name)
	}
	path := filepath.Join(dir, "experiments.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o600)
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
	tmp    string // holds the generated experiments file
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
	// What is built so far, released in reverse if a later step fails.
	var release []func()
	started := false
	defer func() {
		for i := len(release) - 1; i >= 0 && !started; i-- {
			release[i]()
		}
	}()

	tc := tap.NewDefaultConfig()
	tc.Kafka.Brokers, tc.Ops.ListenAddr, tc.ListenAddr = o.Brokers, local, local
	tc.ChampionURL, tc.Experiment, tc.ModelName = o.ChampionURL, o.Experiment, "champion"
	t, err := tap.New(tc, o.Logger.With("service", "tap"), p.Registries["tap"])
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	release = append(release, func() { _ = t.Close() })
	addr, err := t.Listen()
	if err != nil {
		return nil, fmt.Errorf("tap: %w", err)
	}
	p.ProxyURL = "http://" + addr.String()

	var expFile string
	if len(o.Shadows) == 0 && len(o.Segments) > 0 { // segments live in the experiments file
		name := o.ShadowName
		if name == "" {
			name = "candidate"
		}
		o.Shadows = []Shadow{{Name: name, URL: o.ShadowURL}}
	}
	if len(o.Shadows) > 0 {
		dir, err := os.MkdirTemp("", "understudy-pipeline-")
		if err != nil {
			return nil, err
		}
		p.tmp = dir
		release = append(release, func() { _ = os.RemoveAll(dir) })
		if expFile, err = experimentsFile(dir, o); err != nil {
			return nil, fmt.Errorf("experiments file: %w", err)
		}
	}
	ic := invoker.NewDefaultConfig()
	ic.Kafka.Brokers, ic.Ops.ListenAddr = o.Brokers, local
	ic.ShadowURL, ic.ShadowName, ic.Experiment, ic.ShadowModel = o.ShadowURL, o.ShadowName, o.Experiment, o.ShadowName
	ic.ExperimentsFile = expFile
	ic.InstanceID = "pipeline-" + o.Experiment // one transactional id per in-process pipeline
	inv, err := invoker.New(ic, o.Logger.With("service", "invoker"), p.Registries["invoker"])
	if err != nil {
		return nil, fmt.Errorf("invoker: %w", err)
	}
	release = append(release, inv.Close)

	jc := joiner.NewDefaultConfig()
	jc.Kafka.Brokers, jc.Ops.ListenAddr, jc.ExpectedShadows, jc.DatabaseURL = o.Brokers, local, o.ShadowName, o.DatabaseURL
	jc.InstanceID = "pipeline-" + o.Experiment
	if expFile != "" {
		jc.ExperimentsFile = expFile
	}
	if o.JoinWindow > 0 {
		jc.Window = o.JoinWindow
	}
	j, err := joiner.New(jc, o.Logger.With("service", "joiner"), p.Registries["joiner"])
	if err != nil {
		return nil, fmt.Errorf("joiner: %w", err)
	}
	release = append(release, j.Close)

	ac := aggregator.NewDefaultConfig()
	ac.Kafka.Brokers, ac.Ops.ListenAddr, ac.DatabaseURL = o.Brokers, local, o.DatabaseURL
	if o.CountWindow > 0 {
		ac.Window = o.CountWindow
	}
	ac.ExperimentsFile = expFile
	if o.Aggregator != nil {
		o.Aggregator(&ac)
	}
	a, err := aggregator.New(ac, o.Logger.With("service", "aggregator"), p.Registries["aggregator"])
	if err != nil {
		return nil, fmt.Errorf("aggregator: %w", err)
	}
	release = append(release, a.Close)

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

	started = true // from here on each service's Run releases what it holds
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
	if p.tmp != "" {
		_ = os.RemoveAll(p.tmp)
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Wait blocks until a service fails or the pipeline's context ends.
func (p *Pipeline) Wait() error { return p.group.Wait() }
