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
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
	"github.com/understudy-ml/understudy/services/platform/backoff"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/progress"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/svc"
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
	j.registerMetrics(reg)
	return j, nil
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
		j.consume()
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
		// A session that fails again soon after it started (Postgres or the broker still
		// down) is replaced after a growing delay, not at once: each new session rejoins the
		// group.
		again := backoff.Retry{Min: 100 * time.Millisecond, Max: 5 * time.Second}
		for {
			began := time.Now()
			err := j.loop(gctx)
			if gctx.Err() != nil {
				return nil
			}
			if errors.Is(err, consume.ErrInstanceFenced) {
				return err // a new session would fence the other member in turn
			}
			j.progress.Failed(err)
			if time.Since(began) > time.Minute {
				again.Reset()
			}
			if !again.Wait(gctx) {
				return nil
			}
			if err := j.recover(gctx, err); err != nil {
				return nil
			}
		}
	})
	return g.Wait()
}
