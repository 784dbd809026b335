// Package app is the invoker: it consumes inference events, calls every shadow configured for
// the event's experiment with the same request, and publishes one ShadowResult per (request,
// shadow).
//
// Isolation: every shadow has its own lane, a consumer group (LaneGroup) and transactional id
// (understudy-invoker-<instance-id>/<experiment>/<shadow>) of its own, so a slow or failing
// shadow only delays its own results; another shadow's results and coverage are untouched.
// An intake lane (group --kafka.group, transactional id understudy-invoker-<instance-id>)
// dead-letters undecodable and invalid events once, whatever the number of shadows.
//
// Delivery: exactly once per (request, shadow) as read with read_committed. Each lane handles
// a batch of events in one Kafka transaction: its results and its consumed offsets commit
// together or not at all; an aborted batch (crash, rebalance) is consumed again. The shadow
// calls themselves may therefore repeat after a crash: shadows must be free of side effects.
// A shadow's slowness or failure only becomes a result with an error kind; a slow shadow
// holds its in-flight budget, so its lane's lag grows instead of memory.
//
// Pacing: calls leave open loop, a small transport delay after the champion answered (event
// time plus its latency; see pacer), so the shadow sees the champion's inter-arrival gaps
// instead of one burst per batch; a backlog is caught up at once. Replicas share the groups.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/invoker/internal/shadow"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/launch"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/svc"
	"golang.org/x/sync/errgroup"
)

// Invoker calls shadows for captured requests. Create it with New, start it with Run.
type Invoker struct {
	cfg    Config
	logger *slog.Logger
	codecs *schemas.Codecs
	intake *lane
	dlq    *deadletter.Publisher
	ops    *server.Server
	m      *metrics
	// callers is the desired set of shadows; reloaded signals a change to Run.
	callers  atomic.Pointer[callerSet]
	reloaded chan struct{}

	mu    sync.Mutex
	lanes map[laneKey]*shadowLane // running shadow lanes, changed only by supervise
}

// laneKey names a shadow of an experiment.
type laneKey struct{ experiment, shadow string }

// callerSet is one generation of shadow callers.
type callerSet struct {
	byLane map[laneKey]*shadow.Caller
	// explicit holds the experiments configured by name: the AnyExperiment shadows skip them.
	explicit map[string]bool
	// anyExperiment: some shadow serves every experiment (AnyExperiment).
	anyExperiment bool
}

// New wires an invoker; it does not touch the network.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Invoker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	inv := &Invoker{cfg: cfg, logger: logger, codecs: codecs, m: newMetrics(reg), reloaded: make(chan struct{}, 1), lanes: map[laneKey]*shadowLane{}}
	exps, err := cfg.Experiments()
	if err != nil {
		return nil, svc.FileError("experiments.file", err)
	}
	set, err := inv.buildCallers(exps)
	if err != nil {
		return nil, err
	}
	inv.callers.Store(set)
	inv.intake, err = inv.newLane("intake", cfg.Group, "understudy-invoker-"+cfg.InstanceID, inv.screen)
	if err != nil {
		return nil, err
	}
	inv.dlq = deadletter.New("invoker", inv.intake.sess, reg)
	inv.ops = server.New(cfg.Ops, logger, reg)
	inv.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, inv.intake.sess.Client()) })
	inv.ops.AddCheck("progress", inv.progressCheck)
	return inv, nil
}

func (inv *Invoker) buildCallers(exps []experiment.Experiment) (*callerSet, error) {
	set := &callerSet{byLane: map[laneKey]*shadow.Caller{}, explicit: map[string]bool{}}
	for _, e := range exps {
		if e.Name != AnyExperiment {
			set.explicit[e.Name] = true
		} else if len(e.Shadows) > 0 {
			set.anyExperiment = true
		}
		for _, s := range e.Shadows {
			c, err := shadow.New(s, inv.m)
			if err != nil {
				return nil, fmt.Errorf("experiment %q shadow %q: %w", e.Name, s.Name, err)
			}
			set.byLane[laneKey{e.Name, s.Name}] = c
		}
	}
	return set, nil
}

// progressCheck fails while any lane's batches keep aborting or stall.
func (inv *Invoker) progressCheck(ctx context.Context) error {
	errs := []error{inv.intake.progress.Check(ctx)}
	inv.mu.Lock()
	for _, sl := range inv.lanes {
		if err := sl.progress.Check(ctx); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", sl.name, err))
		}
	}
	inv.mu.Unlock()
	return errors.Join(errs...)
}

// Ops returns the operational server.
func (inv *Invoker) Ops() *server.Server { return inv.ops }

// Reload reads the experiments file again and applies it before the lanes' next batches: a
// changed shadow keeps its lane, a new shadow gets a lane, a removed shadow's lane finishes
// its batch and stops. An invalid file changes nothing; the error lists every problem.
func (inv *Invoker) Reload() error {
	if inv.cfg.ExperimentsFile == "" {
		return errors.New("reload: no experiments file configured")
	}
	exps, err := inv.cfg.Experiments()
	if err != nil {
		return fmt.Errorf("reload rejected, keeping the current experiments: %w", err)
	}
	set, err := inv.buildCallers(exps)
	if err != nil {
		return fmt.Errorf("reload rejected, keeping the current experiments: %w", err)
	}
	inv.callers.Store(set)
	select {
	case inv.reloaded <- struct{}{}:
	default:
	}
	inv.logger.Info("experiments reloaded", "experiments", len(exps))
	return nil
}

// Close releases what New built (the intake lane's Kafka client, the ops listener) for an invoker whose Run
// never ran or has returned; Run closes it too when it returns. It is idempotent.
func (inv *Invoker) Close() {
	inv.intake.close()
	inv.ops.Close()
}

// Run consumes until ctx ends; every lane finishes and commits its batch in progress and
// leaves its group.
func (inv *Invoker) Run(ctx context.Context) error {
	defer inv.Close()
	if err := registry.Configure(ctx, inv.cfg.Registry, inv.codecs); err != nil {
		return err
	}
	inv.logger.Info("invoker starting", "group", inv.cfg.Group, "instance_id", inv.cfg.InstanceID, "shadows", len(inv.callers.Load().byLane))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inv.ops.Run(gctx) })
	g.Go(func() error { return inv.intake.run(gctx) })
	g.Go(func() error { return inv.supervise(gctx) })
	if inv.cfg.ExperimentsFile != "" {
		g.Go(func() error { launch.ReloadOnHangup(gctx, inv.logger, "experiments", inv.Reload); return nil })
	}
	return g.Wait()
}

// supervise keeps one running lane per configured shadow until ctx ends or a lane fails.
func (inv *Invoker) supervise(ctx context.Context) error {
	failed := make(chan error, 1)
	defer inv.stopLanes(func(laneKey) bool { return true })
	for {
		set := inv.callers.Load()
		inv.stopLanes(func(k laneKey) bool { return set.byLane[k] == nil })
		for k, c := range set.byLane {
			inv.mu.Lock()
			sl := inv.lanes[k]
			inv.mu.Unlock()
			if sl != nil {
				if old := sl.caller.Swap(c); old != c {
					old.Close()
				}
				continue
			}
			sl, err := inv.newShadowLane(k, c)
			if err != nil {
				return err
			}
			sl.start(ctx, failed)
			inv.mu.Lock()
			inv.lanes[k] = sl
			inv.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case <-inv.reloaded:
		}
	}
}

// stopLanes stops the running lanes that match, each within the shutdown timeout (and a
// second more for the lane to return after its batch is cut off).
func (inv *Invoker) stopLanes(match func(laneKey) bool) {
	inv.mu.Lock()
	var stopping []*shadowLane
	for k, sl := range inv.lanes {
		if match(k) {
			stopping = append(stopping, sl)
			delete(inv.lanes, k)
		}
	}
	inv.mu.Unlock()
	for _, sl := range stopping {
		if err := sl.stop(inv.cfg.ShutdownTimeout + time.Second); err != nil {
			inv.logger.Warn("lane did not stop cleanly", "lane", sl.name, "err", err)
		}
	}
}

// screen is the intake lane's handler: it dead-letters what no lane can use and counts the
// events no shadow is configured for. It produces nothing else.
func (inv *Invoker) screen(ctx context.Context, fs kgo.Fetches) ([]*kgo.Record, error) {
	set := inv.callers.Load()
	var out []*kgo.Record
	now := time.Now()
	fs.EachRecord(func(r *kgo.Record) {
		ev, reason, err := inv.decode(ctx, r, now)
		if err != nil {
			out = append(out, deadletter.Record("invoker", r, reason, err))
			inv.dlq.Count(reason)
			return
		}
		if !set.explicit[ev.Experiment] && !set.anyExperiment {
			inv.m.ignored.WithLabelValues("no_shadow_configured").Inc()
		}
	})
	return out, nil
}

// decode decodes and checks an inference event; on failure it returns the dead-letter reason.
func (inv *Invoker) decode(ctx context.Context, r *kgo.Record, now time.Time) (schemas.InferenceEvent, string, error) {
	ev, err := inv.codecs.Inference.Decode(ctx, r.Value)
	if err != nil {
		return ev, deadletter.ReasonDecode, err
	}
	if err := inv.cfg.Limits.Inference(ev, now); err != nil {
		return ev, deadletter.ReasonInvalid, err
	}
	if ev.RequestID != string(r.Key) {
		return ev, deadletter.ReasonInvalid, &schemas.FieldError{Field: "request_id", Problem: "differs from the record key"}
	}
	return ev, "", nil
}
