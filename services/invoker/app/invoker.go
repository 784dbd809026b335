// Package app is the invoker: it consumes inference events, calls every shadow configured for
// the event's experiment with the same request, and publishes one ShadowResult per (request,
// shadow).
//
// Delivery: exactly once as read with read_committed. Each batch of events is handled in one
// Kafka transaction (franz-go's GroupTransactSession, transactional id
// understudy-invoker-<instance-id>): its results, its dead letters and its consumed offsets
// commit together or not at all; an aborted batch (crash, rebalance) is consumed again. The
// shadow calls themselves may therefore repeat after a crash: shadows must be free of side
// effects. A shadow's slowness or failure only becomes a result with an error kind; a slow
// shadow holds its in-flight budget, so consumer lag grows instead of memory. Undecodable
// events go to the dead-letter topic. Replicas share the consumer group.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/invoker/shadow"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/launch"
	"github.com/understudy-ml/understudy/services/platform/progress"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"golang.org/x/sync/errgroup"
)

// Invoker calls shadows for captured requests. Create it with New, start it with Run.
type Invoker struct {
	cfg    Config
	logger *slog.Logger
	sess   *kgo.GroupTransactSession
	codecs *schemas.Codecs
	dlq    *deadletter.Publisher
	ops    *server.Server
	// progress: /readyz fails while batches keep aborting.
	progress *progress.Tracker
	m        *metrics
	callers  atomic.Pointer[callerSet]
}

// callerSet is one generation of shadow callers, by experiment.
type callerSet struct {
	byExperiment map[string][]*shadow.Caller
}

func (cs *callerSet) close() {
	for _, callers := range cs.byExperiment {
		for _, c := range callers {
			c.Close()
		}
	}
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
	inv := &Invoker{cfg: cfg, logger: logger, codecs: codecs, m: newMetrics(reg)}
	exps, _ := cfg.Experiments()
	set, err := inv.buildCallers(exps)
	if err != nil {
		return nil, err
	}
	inv.callers.Store(set)
	inv.sess, err = kgo.NewGroupTransactSession(append(cfg.Kafka.Opts(),
		kgo.ConsumerGroup(cfg.Group),
		// Static membership: a restarted replica takes its place back at once instead of
		// waiting for its predecessor's session to time out.
		kgo.InstanceID("understudy-invoker-"+cfg.InstanceID),
		kgo.ConsumeTopics(schemas.TopicInference),
		kgo.TransactionalID("understudy-invoker-"+cfg.InstanceID),
		kgo.TransactionTimeout(30*time.Second), // results are produced at the end of a batch, so transactions are short
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(cfg.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(min(cfg.FetchMaxBytes, 1<<20)),
		kgo.DefaultProduceTopic(schemas.TopicShadow),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	inv.dlq = deadletter.New("invoker", inv.sess, reg)
	inv.ops = server.New(cfg.Ops, logger, reg)
	inv.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, inv.sess.Client()) })
	inv.progress = progress.New(cfg.StallTimeout, time.Now)
	inv.ops.AddCheck("progress", inv.progress.Check)
	return inv, nil
}

func (inv *Invoker) buildCallers(exps []experiment.Experiment) (*callerSet, error) {
	set := &callerSet{byExperiment: map[string][]*shadow.Caller{}}
	for _, e := range exps {
		for _, s := range e.Shadows {
			c, err := shadow.New(s, inv.m)
			if err != nil {
				return nil, fmt.Errorf("experiment %q shadow %q: %w", e.Name, s.Name, err)
			}
			set.byExperiment[e.Name] = append(set.byExperiment[e.Name], c)
		}
	}
	return set, nil
}

// Ops returns the operational server.
func (inv *Invoker) Ops() *server.Server { return inv.ops }

// Reload reads the experiments file again and swaps the new shadows in for the next batch.
// An invalid file changes nothing; the error lists every problem.
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
	inv.callers.Swap(set).close()
	inv.logger.Info("experiments reloaded", "experiments", len(exps))
	return nil
}

// Run consumes until ctx ends, finishes and commits the batch in progress, and leaves the group.
func (inv *Invoker) Run(ctx context.Context) error {
	defer inv.sess.Close()
	defer func() { inv.callers.Load().close() }()
	if err := registry.Configure(ctx, inv.cfg.Registry, inv.codecs); err != nil {
		return err
	}
	// Loading the producer id now fences a crashed predecessor with the same transactional id
	// and aborts its open transaction, instead of waiting for the broker's timeout.
	if _, _, err := inv.sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("init transactional producer: %w", err)
	}
	inv.logger.Info("invoker starting", "group", inv.cfg.Group, "instance_id", inv.cfg.InstanceID, "experiments", len(inv.callers.Load().byExperiment))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inv.ops.Run(gctx) })
	g.Go(func() error { return inv.loop(gctx) })
	if inv.cfg.ExperimentsFile != "" {
		g.Go(func() error { launch.ReloadOnHangup(gctx, inv.logger, "experiments", inv.Reload); return nil })
	}
	return g.Wait()
}

func (inv *Invoker) loop(ctx context.Context) error {
	var lastErr string
	for {
		fs := inv.sess.PollRecords(ctx, inv.cfg.MaxBatch)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		var fatal error
		fs.EachError(func(topic string, partition int32, err error) {
			if f := consume.Fatal(err); f != nil {
				fatal = f
			}
			if msg := err.Error(); msg != lastErr && !errors.Is(err, context.Canceled) {
				lastErr = msg
				inv.logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		if fatal != nil {
			return fatal
		}
		if fs.Empty() {
			continue
		}
		if err := inv.transact(context.WithoutCancel(ctx), fs); err != nil {
			return err
		}
	}
}

// transact handles one batch in one transaction.
func (inv *Invoker) transact(ctx context.Context, fs kgo.Fetches) error {
	inv.progress.Begin()
	if err := inv.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	out, err := inv.process(ctx, fs)
	commit := kgo.TryCommit
	if err == nil {
		if err = inv.sess.ProduceSync(ctx, out...).FirstErr(); err != nil {
			inv.logger.Warn("producing results failed; aborting the batch", "err", err)
		}
	}
	if err != nil {
		commit = kgo.TryAbort
	}
	committed, endErr := inv.sess.End(ctx, commit)
	if endErr != nil {
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if committed {
		inv.progress.Done()
		inv.m.transactions.WithLabelValues("committed").Inc()
	} else {
		inv.progress.Failed(err)
		inv.m.transactions.WithLabelValues("aborted").Inc()
	}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			inv.m.lag.WithLabelValues(strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - p.Records[n-1].Offset - 1))
		}
	})
	return nil
}

// maxResultBytes bounds an encoded ShadowResult, below Kafka's default 1 MiB record limit.
const maxResultBytes = 512 << 10

// process calls the shadows for every event of a batch and returns the records to produce.
func (inv *Invoker) process(ctx context.Context, fs kgo.Fetches) ([]*kgo.Record, error) {
	set := inv.callers.Load()
	var (
		mu  sync.Mutex
		out []*kgo.Record
		wg  sync.WaitGroup
		err error
	)
	now := time.Now() // the clock future event times are judged by, once per batch
	fs.EachRecord(func(r *kgo.Record) {
		if err != nil {
			return
		}
		ev, derr := inv.codecs.Inference.Decode(ctx, r.Value)
		reason := deadletter.ReasonDecode
		if derr == nil {
			reason = deadletter.ReasonInvalid
			if derr = inv.cfg.Limits.Inference(ev, now); derr == nil && ev.RequestID != string(r.Key) {
				derr = &schemas.FieldError{Field: "request_id", Problem: "differs from the record key"}
			}
		}
		if derr != nil {
			mu.Lock()
			out = append(out, deadletter.Record("invoker", r, reason, derr))
			mu.Unlock()
			inv.dlq.Count(reason)
			return
		}
		callers := set.byExperiment[ev.Experiment]
		if len(callers) == 0 {
			callers = set.byExperiment[AnyExperiment]
		}
		if len(callers) == 0 {
			inv.m.ignored.WithLabelValues("no_shadow_configured").Inc()
			return
		}
		for _, c := range callers {
			wg.Go(func() {
				res := c.Call(ctx, ev, "")
				value, eerr := inv.codecs.Shadow.Encode(nil, res)
				if eerr == nil && len(value) > maxResultBytes {
					// A prediction too large to forward (a huge vector): the result says so
					// instead of failing the batch for good at the broker.
					res.Response.Body, res.Response.Prediction = nil, schemas.Prediction{}
					res.Error = &schemas.Error{Kind: shadow.KindBadResponse, Message: fmt.Sprintf("result of %d bytes exceeds the %d-byte record limit", len(value), maxResultBytes)}
					value, eerr = inv.codecs.Shadow.Encode(nil, res)
				}
				mu.Lock()
				defer mu.Unlock()
				if eerr != nil {
					err = fmt.Errorf("encode result: %w", eerr)
					return
				}
				out = append(out, &kgo.Record{Topic: schemas.TopicShadow, Key: []byte(ev.RequestID), Value: value})
			})
		}
	})
	wg.Wait()
	return out, err
}
