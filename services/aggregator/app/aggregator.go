// Package app is the aggregator: it folds comparisons into per experiment × shadow windows in
// Postgres (package store), evaluates alert rules over them and delivers alert webhooks
// (packages alert and webhook), and serves the read API (package api) on its ops address.
//
// Bad input: a record that does not decode, or a comparison without experiment or event time
// (or with a shadow twice), goes to the dead-letter topic with the reason in headers and is
// counted; dead letters are published before the batch's Postgres transaction, so a crash in
// between may publish one twice (at least once), never lose it.
//
// Delivery: exactly-once into Postgres. The base windows of a batch (with dirty marks for the
// 1 h and 1 d rollups containing them) and the next offsets of its partitions are written in
// one Postgres transaction; on assignment the consumer starts from the offsets stored there,
// so a crash or a replay of the input changes no window. A batch whose partition another
// replica has moved past is refused and its partitions re-sought. Kafka group offsets are not
// used. Replicas share the consumer group; writes are one row per touched base window per
// batch, not per record; rollups are recomputed apart (store.Rollup). Alerts are evaluated by
// one replica at a time (Postgres advisory lock).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/api"
	"github.com/understudy-ml/understudy/services/aggregator/internal/dashboard"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/webhook"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/launch"
	"github.com/understudy-ml/understudy/services/platform/logchange"
	"github.com/understudy-ml/understudy/services/platform/pgerr"
	"github.com/understudy-ml/understudy/services/platform/progress"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/svc"
	"golang.org/x/sync/errgroup"
)

// Aggregator folds comparisons into windows in Postgres. Create it with New, start it with Run.
type Aggregator struct {
	cfg      Config
	logger   *slog.Logger
	client   *kgo.Client
	db       *pgxpool.Pool
	store    *store.Store
	codecs   *schemas.Codecs
	dlq      *deadletter.Publisher
	ops      *server.Server
	expected map[string][]string          // experiment → expected shadows, from the experiments file
	compare  map[string]window.Compare    // experiment → how numeric predictions are compared
	segments map[string]*window.Segmenter // experiment → its segments; used by the consuming goroutine only
	rules    atomic.Pointer[alert.Rules]
	engine   *alert.Engine
	sender   *webhook.Sender

	counted prometheus.Counter
	batches prometheus.Counter
	rows    prometheus.Counter
	fenced  prometheus.Counter
	rolled  prometheus.Counter

	progress *progress.Tracker
	fences   fenceStreak
	closing  sync.Once
}

// New wires an aggregator; it does not touch the network (the pool connects lazily).
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	// The files first (each read once, here), so a bad one leaves nothing to release.
	expected, compare, segments, err := cfg.experimentSettings()
	if err != nil {
		return nil, svc.FileError("experiments.file", err)
	}
	rules, err := alert.Load(cfg.Alerts.RulesFile)
	if err != nil {
		return nil, svc.FileError("alerts.rules-file", err)
	}
	db, err := pgxpool.New(context.Background(), cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	a := &Aggregator{cfg: cfg, logger: logger, db: db, codecs: codecs, expected: expected, compare: compare, segments: segments, store: store.New(db, cfg.Group, cfg.levels())}
	opts := cfg.Kafka.Opts()
	if cfg.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(cfg.InstanceID))
	}
	a.client, err = kgo.NewClient(append(opts,
		kgo.SessionTimeout(cfg.SessionTimeout),
		// Batches of about one flush interval: Postgres writes are per window and batch.
		kgo.FetchMaxWait(cfg.FlushInterval),
		kgo.FetchMinBytes(1<<20),
		kgo.ConsumerGroup(cfg.Group),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(a.storedOffsets),
	)...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	a.dlq = deadletter.New("aggregator", a.client, reg)
	if cfg.Ops.Token == "" {
		cfg.Ops.Token = cfg.API.Token // an API behind a token keeps its metrics behind it too
	}
	a.ops = server.New(cfg.Ops, logger, reg)
	a.rules.Store(rules)
	ac := cfg.Alerts
	ac.Options, ac.ExternalURL = cfg.Stats, cfg.API.ExternalURL
	a.engine = alert.NewEngine(ac, db, a.store, a.rules.Load, logger, reg, time.Now)
	var body webhook.Formatter
	if cfg.Webhook.Format == webhook.FormatSlack {
		body = alert.SlackBody
	}
	if a.sender, err = webhook.NewSender(cfg.Webhook, body, db, logger, reg, time.Now); err != nil {
		a.Close()
		return nil, fmt.Errorf("webhook sender: %w", err)
	}
	api.New(a.store, db, a.rules.Load, cfg.Stats, cfg.API.Token, logger, time.Now).Register(a.ops.Mux())
	dashboard.Register(a.ops.Mux())
	if !dashboard.Bundled() {
		logger.Warn("the dashboard was built without its charting library and will draw no charts; build with `make build` (it runs scripts/dashboard-assets.sh first)")
	}
	a.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, a.client) })
	a.ops.AddCheck("postgres", func(ctx context.Context) error { return db.Ping(ctx) })
	a.progress = progress.New(cfg.StallTimeout, time.Now)
	a.ops.AddCheck("progress", a.progress.Check)
	a.ops.AddCheck("fencing", func(context.Context) error { return a.fences.check(time.Now(), cfg.StallTimeout) })
	a.counted = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_comparisons_total", Help: "Comparisons counted into Postgres."})
	a.batches = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_transactions_total", Help: "Postgres transactions committed."})
	a.rows = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_window_rows_written_total", Help: "Base window rows written to Postgres by batches (rollups are counted in understudy_aggregator_rollups_written_total)."})
	a.rolled = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_rollups_written_total", Help: "1h and 1d window rows recomputed from finer windows."})
	a.fenced = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_batches_fenced_total", Help: "Batches refused because the stored offsets had moved past them (partition owned elsewhere); their partitions were sought back to the stored offsets."})
	return a, nil
}

// Ops returns the operational server.
func (a *Aggregator) Ops() *server.Server { return a.ops }

// Close releases what New built (the Kafka client, the Postgres pool) for an aggregator whose
// Run never ran or has returned; Run closes them too when it returns. It is idempotent.
func (a *Aggregator) Close() {
	a.closing.Do(func() {
		a.client.Close()
		a.db.Close()
		a.ops.Close()
	})
}

// Run applies migrations, then aggregates until ctx ends; it finishes the batch in progress.
func (a *Aggregator) Run(ctx context.Context) error {
	defer a.Close()
	if err := registry.Configure(ctx, a.cfg.Registry, a.codecs); err != nil {
		return err
	}
	applied, err := store.Migrate(ctx, a.db)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("migrate: %w", err)
	}
	a.logger.Info("aggregator starting", "group", a.cfg.Group, "window", a.cfg.Window.String(), "migrations_applied", len(applied))
	// The client joins the group only now: New built it without topics, so an aggregator
	// built and never run takes no partitions from the other replicas.
	a.client.AddConsumeTopics(schemas.TopicComparisons)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.ops.Run(gctx) })
	g.Go(func() error {
		return consume.Loop(gctx, a.client, a.logger, consume.Options{Drain: a.cfg.ShutdownTimeout}, a.handle)
	})
	g.Go(func() error { return a.engine.Run(gctx, a.sender.Run) })
	g.Go(func() error { a.maintain(gctx); return nil })
	if a.cfg.Alerts.RulesFile != "" {
		g.Go(func() error { launch.ReloadOnHangup(gctx, a.logger, "alert rules", a.Reload); return nil })
	}
	return g.Wait()
}

// Reload re-reads the alert rules file; an invalid file is reported and the old rules stay.
func (a *Aggregator) Reload() error {
	rules, err := alert.Load(a.cfg.Alerts.RulesFile)
	if err != nil {
		return err
	}
	a.rules.Store(rules)
	a.logger.Info("alert rules reloaded", "file", a.cfg.Alerts.RulesFile)
	return nil
}

// maintain recomputes dirty rollups every rollup interval and deletes expired windows every
// retention interval, until ctx ends.
func (a *Aggregator) maintain(ctx context.Context) {
	rollup, retain := time.NewTicker(a.cfg.RollupInterval), time.NewTicker(a.cfg.Retention.Interval)
	defer rollup.Stop()
	defer retain.Stop()
	var warn logchange.Warner
	report := func(what string, err error) {
		if ctx.Err() == nil {
			warn.Warn(a.logger, what, err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-rollup.C:
			n, err := a.store.Rollup(ctx)
			a.rolled.Add(float64(n))
			report("window rollup", err)
		case <-retain.C:
			n, err := a.store.Retain(ctx, time.Now())
			report("window retention", err)
			if n > 0 {
				a.logger.Info("expired windows deleted", "rows", n)
			}
			// Delivered and failed notifications are kept a week for inspection.
			_, err = webhook.Prune(ctx, a.db, time.Now().Add(-7*24*time.Hour))
			report("webhook outbox retention", err)
		}
	}
}

// folded is one comparison ready to be folded, with the record it came from.
type folded struct {
	rec *kgo.Record
	cmp schemas.Comparison
}

func (a *Aggregator) handle(ctx context.Context, fs kgo.Fetches) error {
	a.progress.Begin()
	var (
		offs []store.Offset
		good []folded
		err  error
	)
	now := time.Now() // the clock future event times are judged by, once per batch
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if len(p.Records) == 0 || err != nil {
			return
		}
		offs = append(offs, store.Offset{Topic: p.Topic, Partition: p.Partition, First: p.Records[0].Offset, Next: p.Records[len(p.Records)-1].Offset + 1})
		for _, r := range p.Records {
			c, derr := a.codecs.Comparison.Decode(ctx, r.Value)
			if derr != nil {
				if err = a.dlq.Publish(ctx, r, deadletter.ReasonDecode, derr); err != nil {
					return
				}
				continue
			}
			if verr := a.cfg.Limits.Comparison(c, now); verr != nil {
				if err = a.dlq.Publish(ctx, r, deadletter.ReasonInvalid, verr); err != nil {
					return
				}
				continue
			}
			good = append(good, folded{rec: r, cmp: c})
		}
	})
	if err != nil {
		a.progress.Failed(err)
		return err
	}
	st, err := a.store.Apply(ctx, a.batch(offs, good))
	if pgerr.IsData(err) {
		// A value Postgres refuses (the edge checks should have caught it): find the record
		// instead of failing the partition for good.
		a.logger.Warn("batch refused by Postgres for its data; applying its records one by one", "err", err)
		st, err = a.isolate(ctx, good, offs)
	}
	if errors.Is(err, store.ErrFenced) {
		a.fenced.Inc()
		a.progress.Done() // handled: refused; the fence streak below decides about readiness
		if d := a.fences.refused(time.Now()); d > a.cfg.StallTimeout {
			return fmt.Errorf("%w: every batch for %s was refused; another replica keeps writing these partitions' offsets", ErrFencedOut, d.Round(time.Second))
		}
		a.logger.Warn("batch refused: stored offsets moved past it; seeking to the stored offsets", "err", err)
		return a.seekStored(ctx, offs)
	}
	if err != nil {
		a.progress.Failed(err)
		return err
	}
	a.progress.Done()
	a.fences.applied()
	a.counted.Add(float64(len(good)))
	a.rows.Add(float64(st.WindowRows))
	a.batches.Inc()
	return nil
}

// fenceStreak tracks batches refused one after another (store.ErrFenced) with none applied in
// between. It is safe for concurrent use (readiness checks read it).
type fenceStreak struct {
	mu          sync.Mutex
	since, last time.Time // first and latest refusal of the streak; zero: none
}

// refused records a refusal at now and returns how long the streak has lasted.
func (f *fenceStreak) refused(now time.Time) time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() {
		f.since = now
	}
	f.last = now
	return now.Sub(f.since)
}

// applied ends the streak.
func (f *fenceStreak) applied() {
	f.mu.Lock()
	f.since, f.last = time.Time{}, time.Time{}
	f.mu.Unlock()
}

// check fails while batches are being refused (the latest within limit of now): the replica
// is fenced. A replica that was fenced once and then found nothing more to read is ready.
func (f *fenceStreak) check(now time.Time, limit time.Duration) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.since.IsZero() || now.Sub(f.last) > limit || f.last.Equal(f.since) {
		return nil
	}
	return fmt.Errorf("fenced: every batch refused since %s (stored offsets moved past them)", f.since.Format(time.RFC3339))
}

// ErrFencedOut stops an aggregator whose batches have all been refused for longer than the
// stall timeout: it cannot make progress, and must not stay up reporting ready.
var ErrFencedOut = errors.New("aggregator fenced out")

// batch folds comparisons into one store batch with offs.
func (a *Aggregator) batch(offs []store.Offset, cs []folded) store.Batch {
	b := store.Batch{Windows: map[window.Key]*window.Window{}, Counts: map[store.CountKey]int64{}, Offsets: offs, ExamplesPerKind: a.cfg.Examples}
	picker := window.NewPicker(a.cfg.Examples, a.store.Base())
	for _, f := range cs {
		c := f.cmp
		status := c.Status
		if c.Label != nil {
			// A labeled comparison repeats a final one with its label: count it apart so
			// that status counts stay one per request.
			status = "labeled"
		}
		b.Counts[store.CountKey{Experiment: c.Experiment, Start: c.EventTime.UTC().Truncate(a.store.Base()), Status: status}]++
		window.FoldSegments(b.Windows, c, a.store.Base(), a.expected[c.Experiment], a.compare[c.Experiment], a.segments[c.Experiment])
		picker.Add(c, a.compare[c.Experiment])
	}
	b.Examples = picker.Examples()
	return b
}

// isolate applies the records of a refused batch one transaction each (each with its own
// offset range, so the exactly-once bookkeeping holds), dead-letters those Postgres refuses
// for their data, and finally stores the batch's end offsets.
func (a *Aggregator) isolate(ctx context.Context, cs []folded, offs []store.Offset) (store.Stats, error) {
	var total store.Stats
	next := map[store.Offset]int64{} // partition (Topic, Partition) → next offset to store
	key := func(topic string, p int32) store.Offset { return store.Offset{Topic: topic, Partition: p} }
	for _, o := range offs {
		next[key(o.Topic, o.Partition)] = o.First
	}
	for _, f := range cs {
		k := key(f.rec.Topic, f.rec.Partition)
		one := []store.Offset{{Topic: k.Topic, Partition: k.Partition, First: next[k], Next: f.rec.Offset + 1}}
		st, err := a.store.Apply(ctx, a.batch(one, []folded{f}))
		if pgerr.IsData(err) {
			if err = a.dlq.Publish(ctx, f.rec, deadletter.ReasonInvalid, fmt.Errorf("postgres refused it: %w", err)); err != nil {
				return total, err
			}
			_, err = a.store.Apply(ctx, a.batch(one, nil))
		}
		if err != nil {
			return total, err
		}
		next[k] = f.rec.Offset + 1
		total.WindowRows += st.WindowRows
	}
	var rest []store.Offset
	for _, o := range offs {
		if first := next[key(o.Topic, o.Partition)]; first < o.Next {
			rest = append(rest, store.Offset{Topic: o.Topic, Partition: o.Partition, First: first, Next: o.Next})
		}
	}
	if len(rest) > 0 {
		if _, err := a.store.Apply(ctx, a.batch(rest, nil)); err != nil {
			return total, err
		}
	}
	return total, nil
}

// seekStored moves the batch's partitions to the offsets stored in Postgres (SetOffsets
// skips partitions no longer assigned). It runs in the polling goroutine before
// AllowRebalance, as SetOffsets requires.
func (a *Aggregator) seekStored(ctx context.Context, offs []store.Offset) error {
	stored, err := a.store.Offsets(ctx)
	if err != nil {
		return err
	}
	to := map[string]map[int32]kgo.EpochOffset{}
	for _, o := range offs {
		next, ok := stored[o.Topic][o.Partition]
		if !ok {
			continue
		}
		if to[o.Topic] == nil {
			to[o.Topic] = map[int32]kgo.EpochOffset{}
		}
		to[o.Topic][o.Partition] = kgo.EpochOffset{Epoch: -1, Offset: next}
	}
	a.client.SetOffsets(to)
	return nil
}

// storedOffsets replaces the offsets the group would start from with those stored in
// Postgres next to the windows; partitions never stored start at the beginning of the topic.
func (a *Aggregator) storedOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := a.store.Offsets(ctx)
	if err != nil {
		return nil, err
	}
	for t, ps := range assigned {
		for p := range ps {
			if o, ok := stored[t][p]; ok {
				assigned[t][p] = kgo.NewOffset().At(o)
			} else {
				assigned[t][p] = kgo.NewOffset().AtStart()
			}
		}
	}
	return assigned, nil
}
