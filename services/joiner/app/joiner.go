// Package app is the joiner: it aligns champion inference events and shadow results by request
// id and emits one final Comparison per request, then, when the request's ground-truth label
// arrives within the label window, one labeled Comparison (the same comparison with its label).
//
// Partition p of the inference, shadow and labels topics is owned by one member (RangeBalancer
// over co-partitioned topics, static membership); the joiner refuses to start when their
// partition counts differ.
//
// Delivery: exactly once as read with read_committed. Each batch is one Kafka transaction
// (GroupTransactSession, transactional id understudy-joiner-<instance-id>) holding the
// batch's comparisons, the changes of its join state (written to the compacted changelog
// understudy.joiner-state.v1, keyed like the inputs so that partition p of the changelog holds
// partition p's state) and its consumed offsets. When a transaction aborts, the in-memory state
// changes of its batch are rolled back; when a partition is assigned, its state is rebuilt from
// the changelog before its inputs are handled. The set of comparisons is therefore the same
// whether or not the joiner crashed. Memory is bounded by join.max-pending: at the limit,
// fetching pauses until joins complete or expire, and lag grows instead of memory.
//
// Labels can come days after their request, so that state lives in Postgres (labelstore),
// not in memory. The transaction that emits a final comparison or reads a label also writes
// it to the label-state changelog understudy.joiner-labels.v1; once the transaction commits,
// the joiner applies those records to Postgres together with the changelog offset. Requests
// whose prediction and label are then both known are emitted labeled in a following
// transaction, with a matched marker in the changelog. On assignment the joiner re-applies
// the changelog from the stored offset (idempotently) and loads the ready queue, so labeled
// comparisons, too, are neither lost nor doubled by a crash.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/labelstore"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/progress"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/topics"
	"golang.org/x/sync/errgroup"
)

// Joiner emits comparisons. Create it with New, start it with Run.
type Joiner struct {
	cfg                     Config
	logger                  *slog.Logger
	now                     func() time.Time
	sess                    *kgo.GroupTransactSession
	codecs                  *schemas.Codecs
	dlq                     *deadletter.Publisher
	ops                     *server.Server
	state                   *joinState
	labels                  *labelJoin // nil when labels are disabled
	db                      *pgxpool.Pool
	inputs                  []string
	stateTopic, labelsTopic string          // changelogs
	paused                  map[string]bool // input topics paused by backpressure
	flow                    *flow
	// progress fails /readyz while transactions keep failing; labelProgress while label
	// state cannot be written to Postgres.
	progress, labelProgress *progress.Tracker

	mu       sync.Mutex
	assigned map[int32]bool // partitions to restore before the next batch
	revoked  map[int32]bool // partitions to drop

	emitted    *prometheus.CounterVec
	pendingG   prometheus.Gauge
	duplicates prometheus.Counter
	restored   prometheus.Counter
	txns       *prometheus.CounterVec
	lag        prometheus.Gauge
	failures   prometheus.Counter
	keys       *prometheus.GaugeVec
	owned      map[int32]bool
}

// New wires a joiner; it does not touch the network.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Joiner, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	pol, err := cfg.policy()
	if err != nil {
		return nil, fmt.Errorf("experiments: %w", err)
	}
	j := &Joiner{
		cfg: cfg, logger: logger, now: time.Now, codecs: codecs,
		state:    newJoinState(pol),
		assigned: map[int32]bool{}, revoked: map[int32]bool{}, owned: map[int32]bool{},
		inputs: []string{schemas.TopicInference, schemas.TopicShadow},
		paused: map[string]bool{}, flow: newFlow(),
	}
	j.stateTopic, j.labelsTopic = cfg.changelogs()
	if cfg.Labels {
		j.inputs = append(j.inputs, schemas.TopicLabels)
		if j.db, err = pgxpool.New(context.Background(), cfg.DatabaseURL); err != nil {
			return nil, fmt.Errorf("postgres pool: %w", err)
		}
		j.labels = newLabelJoin(labelstore.New(j.db, cfg.Group, cfg.LabelBucket), pol, cfg.LabelBucket, reg)
	}
	if j.sess, err = j.newSession(); err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	j.dlq = deadletter.New("joiner", j.sess, reg)
	j.ops = server.New(cfg.Ops, logger, reg)
	j.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, j.client()) })
	j.progress, j.labelProgress = progress.New(cfg.StallTimeout, time.Now), progress.New(cfg.StallTimeout, time.Now)
	j.ops.AddCheck("progress", j.progress.Check)
	if j.labels != nil {
		j.ops.AddCheck("postgres", j.labels.store.Ping)
		j.ops.AddCheck("label_store_progress", j.labelProgress.Check)
		j.labels.progress = j.labelProgress
	}
	j.emitted = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_comparisons_total", Help: "Comparisons committed, by status."}, []string{"status"})
	j.pendingG = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_pending_joins", Help: "Joins waiting for a missing side."})
	j.duplicates = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_duplicate_inputs_total", Help: "Inputs dropped because their side had already arrived or been emitted."})
	j.restored = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_state_restored_total", Help: "Changelog entries read while restoring assigned partitions."})
	j.txns = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_transactions_total", Help: "Kafka transactions by result."}, []string{"result"})
	j.failures = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_session_failures_total", Help: "Kafka sessions replaced after a failure (state restored from the changelogs)."})
	j.lag = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_window_lag_seconds", Help: "Wall clock minus the oldest event-time watermark of the owned partitions: how far behind real time joins close."})
	j.keys = f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_joiner_state_keys", Help: "Keys in the in-memory join state: pending joins and remembered emitted ids."}, []string{"kind"})
	return j, nil
}

// newSession creates the transactional consumer-producer session.
func (j *Joiner) newSession() (*kgo.GroupTransactSession, error) {
	return kgo.NewGroupTransactSession(append(j.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(j.cfg.Group),
		kgo.InstanceID("understudy-joiner-"+j.cfg.InstanceID),
		kgo.ConsumeTopics(j.inputs...),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.TransactionalID("understudy-joiner-"+j.cfg.InstanceID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(4<<20),
		kgo.OnPartitionsAssigned(j.onAssigned),
		kgo.OnPartitionsRevoked(j.onRevoked),
		kgo.OnPartitionsLost(j.onRevoked),
		kgo.DefaultProduceTopic(schemas.TopicComparisons),
	)...)
}

// client returns the current session's client (the session is replaced after a failure).
func (j *Joiner) client() *kgo.Client {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.sess.Client()
}

// recover replaces a broken session: franz-go's clients cannot be reused after a failed
// transaction end, so the joiner closes it, forgets its in-memory state (restored again from
// the changelogs when partitions are assigned) and starts a new session with the same
// transactional id, which fences and aborts whatever the old one left open.
func (j *Joiner) recover(ctx context.Context, cause error) error {
	j.logger.Warn("kafka session failed; starting a new one", "err", cause)
	j.failures.Inc()
	j.sess.Close()
	j.state = newJoinState(j.state.policy)
	clear(j.owned)
	j.paused, j.flow = map[string]bool{}, newFlow()
	if j.labels != nil {
		j.labels.drain(ctx)
		j.labels.reset()
	}
	j.mu.Lock()
	clear(j.assigned)
	clear(j.revoked)
	j.mu.Unlock()
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		sess, err := j.newSession()
		if err == nil {
			if _, _, err = sess.Client().ProducerID(ctx); err == nil {
				j.mu.Lock()
				j.sess = sess
				j.mu.Unlock()
				return nil
			}
			sess.Close()
		}
		j.logger.Warn("new kafka session failed; retrying", "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
	}
}

func (j *Joiner) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	j.note(assigned, true)
}

func (j *Joiner) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	j.note(revoked, false)
}

// note records assigned (or revoked) partitions for the loop to act on; a partition is in at
// most one of the two sets, the latest event winning.
func (j *Joiner) note(parts map[string][]int32, assigned bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	set, unset := j.revoked, j.assigned
	if assigned {
		set, unset = j.assigned, j.revoked
	}
	for _, ps := range parts {
		for _, p := range ps {
			set[p] = true
			delete(unset, p)
		}
	}
}

// Ops returns the operational server.
func (j *Joiner) Ops() *server.Server { return j.ops }

// Run checks co-partitioning, then joins until ctx ends; it commits the batch in progress.
func (j *Joiner) Run(ctx context.Context) error {
	defer func() { j.sess.Close() }()
	if j.db != nil {
		defer j.db.Close()
	}
	if err := registry.Configure(ctx, j.cfg.Registry, j.codecs); err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return j.ops.Run(gctx) })
	g.Go(func() error {
		n, err := j.prepare(gctx)
		if err != nil || gctx.Err() != nil {
			return err
		}
		j.logger.Info("joiner starting", "group", j.cfg.Group, "instance_id", j.cfg.InstanceID, "partitions", n,
			"expected_shadows", j.cfg.ExpectedShadows, "window", j.cfg.Window.String(), "grace", j.cfg.Grace.String(),
			"experiments", len(j.state.policy.exps), "labels", j.labels != nil)
		if j.labels != nil {
			g.Go(func() error {
				j.labels.runApplier(gctx, j.cfg.RetainInterval, j.now,
					func(err error) {
						j.labelProgress.Failed(err)
						j.logger.Warn("applying label state to Postgres failed; retrying", "err", err)
					},
					func(err error) { j.logger.Warn("label-state retention failed", "err", err) })
				return nil
			})
		}
		for {
			err := j.loop(gctx)
			if gctx.Err() != nil {
				return nil
			}
			if errors.Is(err, consume.ErrInstanceFenced) {
				return err // a new session would fence the other member in turn
			}
			j.progress.Failed(err)
			if err := j.recover(gctx, err); err != nil {
				return nil
			}
		}
	})
	return g.Wait()
}

// prepare migrates the label store, checks (and creates) topics and fences a crashed
// predecessor's transaction. Unreachable Kafka or Postgres is waited for, with backoff; inputs
// that are missing or not co-partitioned make the joiner refuse to start.
func (j *Joiner) prepare(ctx context.Context) (int, error) {
	for backoff := time.Second; ; backoff = min(2*backoff, 30*time.Second) {
		n, err := j.prepareOnce(ctx)
		switch {
		case err == nil:
			return n, nil
		case ctx.Err() != nil:
			return 0, nil
		case errors.Is(err, topics.ErrPartitionMismatch) || errors.Is(err, topics.ErrMissing) || errors.Is(err, labelstore.ErrBucketMismatch):
			return 0, fmt.Errorf("joiner refuses to start: %w", err)
		}
		j.logger.Warn("joiner not ready to start; retrying", "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return 0, nil
		case <-time.After(backoff):
		}
	}
}

func (j *Joiner) prepareOnce(ctx context.Context) (int, error) {
	if j.labels != nil {
		if err := j.labels.store.Migrate(ctx); err != nil {
			return 0, fmt.Errorf("label store: %w", err)
		}
	}
	n, err := j.checkTopics(ctx)
	if err != nil {
		return 0, err
	}
	// Fence a crashed predecessor now (aborting its open transaction) rather than after the
	// broker's transaction timeout.
	if _, _, err := j.sess.Client().ProducerID(ctx); err != nil {
		return 0, fmt.Errorf("init transactional producer: %w", err)
	}
	return n, nil
}

// checkTopics checks that the inputs are co-partitioned, creates missing changelogs with the
// inputs' partition count, and checks the changelogs too.
func (j *Joiner) checkTopics(ctx context.Context) (int, error) {
	n, err := topics.CheckCoPartitioned(ctx, j.sess.Client(), j.inputs...)
	if err != nil {
		return 0, err
	}
	tc := topics.NewDefaultConfig()
	tc.Partitions = n
	specs := []topics.Spec{{Name: j.stateTopic, Compact: true}}
	if j.labels != nil {
		// Keep the label changelog at least as long as the label state it rebuilds.
		keep := max(tc.LabelStateRetention, j.state.policy.maxLabelWindow()+2*j.cfg.LabelBucket)
		specs = append(specs, topics.Spec{Name: j.labelsTopic, Retention: keep})
	}
	if _, err := topics.Ensure(ctx, j.sess.Client(), tc, specs); err != nil {
		return 0, fmt.Errorf("changelog topics: %w", err)
	}
	all := append([]string{j.stateTopic}, j.inputs...)
	if j.labels != nil {
		all = append(all, j.labelsTopic)
	}
	return topics.CheckCoPartitioned(ctx, j.sess.Client(), all...)
}

func (j *Joiner) loop(ctx context.Context) error {
	var lastErr string
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := j.sess.PollRecords(pctx, j.cfg.MaxBatch)
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		var fatal error
		fs.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			if f := consume.Fatal(err); f != nil {
				fatal = f
			}
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				j.logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		if fatal != nil {
			return fatal
		}
		bctx := context.WithoutCancel(ctx)
		if err := j.applyAssignment(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if j.labels != nil {
			j.labels.collect(j.owns)
		}
		if fs.Empty() && !j.state.due(j.now()) && (j.labels == nil || len(j.labels.ready) == 0) {
			j.backpressure() // a paused input may have to resume although nothing arrived
			continue
		}
		entries, err := j.transact(bctx, fs)
		if err != nil {
			return err
		}
		if j.labels != nil {
			j.labels.submit(ctx, entries)
		}
	}
}

// applyAssignment drops revoked partitions and restores newly assigned ones from the changelog.
func (j *Joiner) applyAssignment(ctx context.Context) error {
	j.mu.Lock()
	revoked, assigned := j.revoked, j.assigned
	j.revoked, j.assigned = map[int32]bool{}, map[int32]bool{}
	j.mu.Unlock()
	for p := range revoked {
		j.state.drop(p)
		delete(j.owned, p)
		if j.labels != nil {
			j.labels.drop(p)
		}
	}
	if len(assigned) == 0 {
		return nil
	}
	start := time.Now()
	n, err := j.restore(ctx, assigned)
	if err != nil {
		return fmt.Errorf("restore join state: %w", err)
	}
	for p := range assigned {
		j.owned[p] = true
	}
	if err := j.measureBacklog(ctx, assigned); err != nil {
		j.logger.Warn("measuring the input backlog failed; inputs are not aligned until fetched", "err", err)
	}
	j.restored.Add(float64(n))
	j.logger.Info("join state restored", "partitions", len(assigned), "entries", n, "pending", j.state.size(), "took", time.Since(start).String())
	if j.labels != nil {
		start = time.Now()
		j.labels.drain(ctx) // what this member committed is applied before catching up
		applied, ready, err := j.catchUpLabels(ctx, assigned)
		if err != nil {
			return fmt.Errorf("catch up label state: %w", err)
		}
		j.logger.Info("label state caught up", "partitions", len(assigned), "applied", applied, "ready", ready, "took", time.Since(start).String())
	}
	return nil
}

func (j *Joiner) owns(p int32) bool { return j.owned[p] }

// measureBacklog records each assigned join input partition's backlog (end offset minus the
// group's committed offset, or the log start) so that inputs are aligned from the first fetch.
func (j *Joiner) measureBacklog(ctx context.Context, parts map[int32]bool) error {
	adm := kadm.NewClient(j.sess.Client())
	join := []string{schemas.TopicInference, schemas.TopicShadow}
	ends, err := adm.ListEndOffsets(ctx, join...)
	if err != nil {
		return err
	}
	starts, err := adm.ListStartOffsets(ctx, join...)
	if err != nil {
		return err
	}
	committed, err := adm.FetchOffsetsForTopics(ctx, j.cfg.Group, join...)
	if err != nil {
		return err
	}
	ends.Each(func(o kadm.ListedOffset) {
		if !parts[o.Partition] || o.Err != nil {
			return
		}
		from := int64(0)
		if s, ok := starts.Lookup(o.Topic, o.Partition); ok && s.Err == nil {
			from = s.Offset
		}
		if c, ok := committed.Lookup(o.Topic, o.Partition); ok && c.Err == nil && c.At > from {
			from = c.At
		}
		j.flow.setLag(o.Topic, o.Partition, o.Offset-from, j.now())
	})
	return nil
}

// catchUpLabels applies the label-state changelog of parts from the offsets stored in
// Postgres to its end, then loads their ready queue.
func (j *Joiner) catchUpLabels(ctx context.Context, parts map[int32]bool) (applied, ready int, err error) {
	list := make([]int32, 0, len(parts))
	for p := range parts {
		list = append(list, p)
	}
	from, err := j.labels.store.Offsets(ctx, list)
	if err != nil {
		return 0, 0, err
	}
	var batch []labelstore.Entry
	flush := func() error {
		applied += len(batch)
		found, err := j.labels.apply(ctx, batch, func(err error) { j.logger.Warn("applying label state failed; retrying", "err", err) })
		j.labels.add(found, j.owns)
		batch = batch[:0]
		return err
	}
	err = readLog(ctx, j.cfg.Kafka.Opts(), j.labelsTopic, from, func(r *kgo.Record) error {
		e, err := entryOf(r)
		if err != nil {
			j.logger.Warn("skipping a label-state record", "err", err)
			return nil
		}
		if batch = append(batch, e); len(batch) >= 5000 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return applied, 0, err
	}
	q, err := j.labels.store.LoadReady(ctx, list)
	if err != nil {
		return applied, 0, err
	}
	j.labels.add(q, j.owns)
	return applied, len(q), nil
}

// restore reads partitions' changelog up to its last stable offset.
func (j *Joiner) restore(ctx context.Context, parts map[int32]bool) (int, error) {
	from := map[int32]int64{}
	for p := range parts {
		j.state.drop(p)
		j.state.part(p)
		from[p] = 0
	}
	n := 0
	err := readLog(ctx, j.cfg.Kafka.Opts(), j.stateTopic, from, func(r *kgo.Record) error {
		var c *schemas.Comparison
		if r.Value != nil {
			v, err := j.codecs.Comparison.Decode(ctx, r.Value)
			if err != nil {
				return nil // a corrupt entry loses one join's state, never the process
			}
			c = &v
		}
		j.state.restore(r.Partition, string(r.Key), c)
		n++
		return nil
	})
	return n, err
}

// readLog reads topic's partitions from the given offsets up to their last stable offset, with
// read_committed, calling fn for every data record in offset order per partition.
func readLog(ctx context.Context, opts []kgo.Opt, topic string, from map[int32]int64, fn func(*kgo.Record) error) error {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	ends, err := kadm.NewClient(cl).ListCommittedOffsets(ctx, topic)
	cl.Close()
	if err != nil {
		return err
	}
	offsets := map[int32]kgo.Offset{}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if start, ok := from[o.Partition]; ok && o.Offset > start {
			offsets[o.Partition] = kgo.NewOffset().At(start)
			remaining[o.Partition] = o.Offset
		}
	})
	if len(offsets) == 0 {
		return nil
	}
	// Control records (transaction markers) are kept so that the end of the log is seen even
	// when it is a marker: reading stops at the last stable offset, never at a timeout.
	cl, err = kgo.NewClient(append(opts,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return err
	}
	defer cl.Close()
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return err
		}
		var ferr error
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end || ferr != nil {
				return
			}
			if r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
			if !r.Attrs.IsControl() {
				ferr = fn(r)
			}
		})
		if ferr != nil {
			return ferr
		}
	}
	return nil
}

// transact handles one batch in one transaction and returns the label-state entries it
// committed (to apply to Postgres).
func (j *Joiner) transact(ctx context.Context, fs kgo.Fetches) ([]labelstore.Entry, error) {
	j.progress.Begin()
	if err := j.sess.Begin(); err != nil {
		return nil, fmt.Errorf("begin transaction: %w", err)
	}
	j.flow.observe(fs, j.now())
	now := j.now()
	var out []schemas.Comparison
	var recs []*kgo.Record
	fs.EachRecord(func(r *kgo.Record) {
		var (
			c   *schemas.Comparison
			err error
		)
		reason := deadletter.ReasonDecode
		switch r.Topic {
		case schemas.TopicInference:
			var ev schemas.InferenceEvent
			if ev, err = j.codecs.Inference.Decode(ctx, r.Value); err == nil {
				err = j.valid(r, ev.RequestID, j.cfg.Limits.Inference(ev, now))
			}
			if err == nil {
				c = j.state.addChampion(r.Partition, ev, now)
				j.flow.seen(r.Topic, ev.EventTime)
			}
		case schemas.TopicShadow:
			var res schemas.ShadowResult
			if res, err = j.codecs.Shadow.Decode(ctx, r.Value); err == nil {
				err = j.valid(r, res.RequestID, j.cfg.Limits.Shadow(res, now))
			}
			if err == nil {
				c = j.state.addShadow(r.Partition, res, now)
				j.flow.seen(r.Topic, res.EventTime)
			}
		case schemas.TopicLabels:
			var lab schemas.LabelEvent
			if lab, err = j.codecs.Label.Decode(ctx, r.Value); err == nil {
				err = j.valid(r, lab.RequestID, j.cfg.Limits.Label(lab, now))
			}
			if err == nil {
				if rec := j.labels.onLabel(j.labelsTopic, r.Value, lab, now); rec != nil {
					recs = append(recs, rec)
				}
			}
		}
		if errors.Is(err, schemas.ErrInvalid) {
			reason = deadletter.ReasonInvalid
		}
		if err != nil {
			recs = append(recs, deadletter.Record("joiner", r, reason, err))
			j.dlq.Count(reason)
		}
		if c != nil {
			out = append(out, *c)
		}
	})
	out = append(out, j.state.expire(now, j.cfg.MaxBatch)...)
	var err error
	for _, c := range out {
		v, eerr := j.codecs.Comparison.Encode(nil, c)
		if eerr != nil {
			err = fmt.Errorf("encode comparison: %w", eerr)
			break
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
		if j.labels != nil {
			recs = append(recs, stateRecord(j.labelsTopic, labelstore.KindPrediction, c.RequestID, c.EventTime, v, c.Experiment))
		}
	}
	var labeled []schemas.Comparison
	if j.labels != nil && err == nil {
		var markers []*kgo.Record
		labeled, markers = j.labels.take(j.labelsTopic, j.codecs, now, j.cfg.MaxBatch)
		for _, c := range labeled {
			v, eerr := j.codecs.Comparison.Encode(nil, c)
			if eerr != nil {
				err = fmt.Errorf("encode labeled comparison: %w", eerr)
				break
			}
			recs = append(recs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
		}
		recs = append(recs, markers...)
	}
	for _, ch := range j.state.changes() {
		if err != nil {
			break
		}
		rec := &kgo.Record{Topic: j.stateTopic, Key: []byte(ch.id)}
		switch {
		case ch.pending != nil:
			state := ch.pending.cmp
			state.Status, state.EmittedAt = schemas.StatusPending, ch.pending.firstSeen
			rec.Value, err = j.codecs.Comparison.Encode(nil, state)
		case !ch.emittedAt.IsZero():
			rec.Value, err = j.codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: ch.id, Status: schemas.StatusEmitted, EmittedAt: ch.emittedAt})
		}
		recs = append(recs, rec)
	}
	commit := kgo.TryCommit
	if err == nil {
		if err = j.sess.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			j.logger.Warn("producing comparisons failed; aborting the batch", "err", err)
		}
	}
	if err != nil {
		commit = kgo.TryAbort
	}
	committed, endErr := j.sess.End(ctx, commit)
	if endErr != nil || !committed {
		j.state.rollback()
		if j.labels != nil {
			j.labels.aborted()
		}
		if endErr != nil {
			return nil, fmt.Errorf("end transaction: %w", endErr)
		}
		j.txns.WithLabelValues("aborted").Inc()
		j.progress.Failed(err)
		return nil, nil
	}
	j.progress.Done()
	j.duplicates.Add(float64(j.state.dupes))
	j.state.commit()
	j.txns.WithLabelValues("committed").Inc()
	for _, c := range out {
		j.emitted.WithLabelValues(c.Status).Inc()
	}
	var entries []labelstore.Entry
	if j.labels != nil {
		j.labels.committed(labeled)
		for _, r := range recs {
			if r.Topic != j.labelsTopic {
				continue
			}
			e, eerr := entryOf(r)
			if eerr != nil {
				return nil, eerr // our own records: a bug, not bad input
			}
			entries = append(entries, e)
		}
	}
	j.observe(now)
	j.backpressure()
	return entries, nil
}

// valid returns the problems of a decoded record (problems from schemas.Limits, plus a
// request id that differs from the record key, which would break co-partitioning); nil when
// it may be joined. Every error wraps schemas.ErrInvalid.
func (j *Joiner) valid(r *kgo.Record, requestID string, problems error) error {
	if problems == nil && requestID != string(r.Key) {
		problems = &schemas.FieldError{Field: "request_id", Problem: "differs from the record key"}
	}
	if problems != nil {
		return fmt.Errorf("%s record: %w", r.Topic, problems)
	}
	return nil
}

// observe updates the state gauges.
func (j *Joiner) observe(now time.Time) {
	pending, emitted := 0, 0
	var oldest time.Time
	for p, ps := range j.state.parts {
		pending += len(ps.pending)
		emitted += len(ps.emitted)
		if j.owned[p] && !ps.watermark.IsZero() && (oldest.IsZero() || ps.watermark.Before(oldest)) {
			oldest = ps.watermark
		}
	}
	j.pendingG.Set(float64(pending))
	j.keys.WithLabelValues("pending").Set(float64(pending))
	j.keys.WithLabelValues("emitted").Set(float64(emitted))
	if !oldest.IsZero() {
		j.lag.Set(now.Sub(oldest).Seconds())
	}
}

// alignment is how far (in event time) one of the champion and shadow topics may run ahead of
// the other while the other has a backlog. Without it, a member catching up on a backlog reads
// whichever topic the broker serves first, and every record of that topic becomes a pending
// join waiting for a side that is still in the log (memory grows with the backlog, and at
// join.max-pending joins expire incomplete). Kafka Streams synchronizes its inputs by
// timestamp for the same reason.
const alignment = time.Second

// flow tracks, per join input topic, the latest event time processed and the backlog (records
// behind the high watermark) seen in the latest fetch of each partition.
type flow struct {
	watermark map[string]time.Time
	lag       map[string]map[int32]int64
	delivered map[string]time.Time // when the topic last delivered records (or its lag was measured)
}

func newFlow() *flow {
	return &flow{watermark: map[string]time.Time{}, lag: map[string]map[int32]int64{}, delivered: map[string]time.Time{}}
}

func (f *flow) observe(fs kgo.Fetches, now time.Time) {
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			if f.lag[p.Topic] == nil {
				f.lag[p.Topic] = map[int32]int64{}
			}
			f.lag[p.Topic][p.Partition] = p.HighWatermark - p.Records[n-1].Offset - 1
			f.delivered[p.Topic] = now
		}
	})
}

// setLag records a partition's backlog measured from offsets (at assignment, before any fetch).
func (f *flow) setLag(topic string, partition int32, lag int64, now time.Time) {
	if f.lag[topic] == nil {
		f.lag[topic] = map[int32]int64{}
	}
	f.lag[topic][partition] = lag
	f.delivered[topic] = now
}

func (f *flow) seen(topic string, eventTime time.Time) {
	if eventTime.After(f.watermark[topic]) {
		f.watermark[topic] = eventTime
	}
}

// backlog reports whether a partition of topic is more than backlogRecords behind its high
// watermark while the topic keeps delivering records. The threshold ignores transaction
// markers (the shadow topic is transactional, so its high watermark stays past the last
// record); the delivery condition ignores lags that reading cannot reduce (aborted records at
// the end of a partition count in the high watermark but are never delivered). Aligning only
// matters for large backlogs being read, and must never wait on a topic that is quiet.
func (f *flow) backlog(topic string, now time.Time) bool {
	if now.Sub(f.delivered[topic]) > backlogQuiet {
		return false
	}
	for _, n := range f.lag[topic] {
		if n > backlogRecords {
			return true
		}
	}
	return false
}

const (
	backlogRecords = 1000
	backlogQuiet   = 2 * time.Second
)

// ahead returns the join input that runs more than alignment ahead of the other while the
// other still has a backlog, or "". A topic not read yet is behind any topic that has been
// read, when it has a backlog.
func (f *flow) ahead(now time.Time) string {
	inf, sh := f.watermark[schemas.TopicInference], f.watermark[schemas.TopicShadow]
	switch {
	case inf.IsZero() && sh.IsZero():
		return ""
	case inf.IsZero():
		if f.backlog(schemas.TopicInference, now) {
			return schemas.TopicShadow
		}
		return ""
	case sh.IsZero():
		if f.backlog(schemas.TopicShadow, now) {
			return schemas.TopicInference
		}
		return ""
	case inf.Sub(sh) > alignment && f.backlog(schemas.TopicShadow, now):
		return schemas.TopicInference
	case sh.Sub(inf) > alignment && f.backlog(schemas.TopicInference, now):
		return schemas.TopicShadow
	}
	return ""
}

// backpressure pauses the input that runs ahead of the other (see alignment), and both join
// inputs while join.max-pending joins are pending (labels keep flowing: they create no
// pending join). Paused topics resume as soon as the condition ends.
func (j *Joiner) backpressure() {
	want := map[string]bool{}
	if a := j.flow.ahead(j.now()); a != "" {
		want[a] = true
	}
	if full := j.state.size() >= j.cfg.MaxPending; full {
		want[schemas.TopicInference], want[schemas.TopicShadow] = true, true
		if !j.paused[schemas.TopicShadow] || !j.paused[schemas.TopicInference] {
			j.logger.Warn("pending joins at limit: fetching paused", "pending", j.state.size())
		}
	}
	for _, t := range []string{schemas.TopicInference, schemas.TopicShadow} {
		switch {
		case want[t] && !j.paused[t]:
			j.sess.Client().PauseFetchTopics(t)
		case !want[t] && j.paused[t]:
			j.sess.Client().ResumeFetchTopics(t)
		}
	}
	j.paused = want
}
