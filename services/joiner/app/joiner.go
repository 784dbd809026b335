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
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/labelstore"
	"github.com/understudy-ml/understudy/services/platform/backoff"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/logchange"
	"github.com/understudy-ml/understudy/services/platform/progress"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/svc"
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
	// started turns true once prepare is done; /readyz is false before that.
	started atomic.Bool

	mu       sync.Mutex
	closing  sync.Once
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
		return nil, svc.FileError("experiments.file", err)
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
		j.Close() // what New built so far (the Postgres pool)
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	j.dlq = deadletter.New("joiner", j.sess, reg)
	j.ops = server.New(cfg.Ops, logger, reg)
	j.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, j.client()) })
	j.progress, j.labelProgress = progress.New(cfg.StallTimeout, time.Now), progress.New(cfg.StallTimeout, time.Now)
	j.ops.AddCheck("progress", j.progress.Check)
	j.ops.AddCheck("started", func(context.Context) error {
		if !j.started.Load() {
			return errors.New("starting: label store migration, topic checks and producer fencing not done yet")
		}
		return nil
	})
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
	retry := backoff.Retry{Min: time.Second, Max: 30 * time.Second}
	for {
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
		j.logger.Warn("new kafka session failed; retrying", "err", err)
		if !retry.Wait(ctx) {
			return ctx.Err()
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

// Close releases what New built (the Kafka session, the Postgres pool) for a joiner whose Run
// never ran or has returned; Run closes them too when it returns. It is idempotent.
func (j *Joiner) Close() {
	j.closing.Do(func() {
		j.mu.Lock()
		sess := j.sess
		j.mu.Unlock()
		if sess != nil {
			sess.Close()
		}
		if j.db != nil {
			j.db.Close()
		}
		if j.ops != nil {
			j.ops.Close()
		}
	})
}

// Run checks co-partitioning, then joins until ctx ends; it commits the batch in progress.
func (j *Joiner) Run(ctx context.Context) error {
	defer j.Close()
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
		j.started.Store(true)
		expected := j.cfg.ExpectedShadows
		if j.cfg.ExperimentsFile != "" {
			expected += " (only for experiments not in " + j.cfg.ExperimentsFile + ")"
		}
		j.logger.Info("joiner starting", "group", j.cfg.Group, "instance_id", j.cfg.InstanceID, "partitions", n,
			"expected_shadows", expected, "window", j.cfg.Window.String(), "grace", j.cfg.Grace.String(),
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
	retry := backoff.Retry{Min: time.Second, Max: 30 * time.Second}
	for {
		n, err := j.prepareOnce(ctx)
		switch {
		case err == nil:
			return n, nil
		case ctx.Err() != nil:
			return 0, nil
		case errors.Is(err, topics.ErrPartitionMismatch) || errors.Is(err, topics.ErrMissing) || errors.Is(err, labelstore.ErrBucketMismatch):
			return 0, fmt.Errorf("joiner refuses to start: %w", err)
		}
		j.logger.Warn("joiner not ready to start; retrying", "err", err)
		if !retry.Wait(ctx) {
			return 0, nil
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
	var warn logchange.Warner
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
			warn.Warn(j.logger, "fetch error", err, "topic", topic, "partition", partition)
		})
		if fatal != nil {
			return fatal
		}
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
		// The batch finishes at shutdown, within the shutdown timeout.
		bctx, cancelBatch := consume.DrainContext(ctx, j.cfg.ShutdownTimeout)
		entries, err := j.transact(bctx, fs)
		cancelBatch()
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
