// Package app is the joiner: it aligns champion inference events and shadow results by request
// id and emits one Comparison per request.
//
// Partition p of the inference and shadow topics is owned by one member (RangeBalancer over
// co-partitioned topics, static membership); the joiner refuses to start when their partition
// counts differ.
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
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"github.com/understudy-ml/understudy/services/platform/topics"
	"golang.org/x/sync/errgroup"
)

var inputs = []string{schemas.TopicInference, schemas.TopicShadow}

// Joiner emits comparisons. Create it with New, start it with Run.
type Joiner struct {
	cfg    Config
	logger *slog.Logger
	now    func() time.Time
	sess   *kgo.GroupTransactSession
	codecs *schemas.Codecs
	dlq    *deadletter.Publisher
	ops    *server.Server
	state  *joinState
	paused bool

	mu       sync.Mutex
	assigned map[int32]bool // partitions to restore before the next batch
	revoked  map[int32]bool // partitions to drop

	emitted    *prometheus.CounterVec
	pendingG   prometheus.Gauge
	duplicates prometheus.Counter
	restored   prometheus.Counter
	txns       *prometheus.CounterVec
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
	j := &Joiner{
		cfg: cfg, logger: logger, now: time.Now, codecs: codecs,
		state:    newJoinState(cfg.Shadows(), cfg.Window, cfg.Grace),
		assigned: map[int32]bool{}, revoked: map[int32]bool{},
	}
	j.sess, err = kgo.NewGroupTransactSession(append(cfg.Kafka.Opts(),
		kgo.ConsumerGroup(cfg.Group),
		kgo.InstanceID("understudy-joiner-"+cfg.InstanceID),
		kgo.ConsumeTopics(inputs...),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.TransactionalID("understudy-joiner-"+cfg.InstanceID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(4<<20),
		kgo.OnPartitionsAssigned(j.onAssigned),
		kgo.OnPartitionsRevoked(j.onRevoked),
		kgo.OnPartitionsLost(j.onRevoked),
		kgo.DefaultProduceTopic(schemas.TopicComparisons),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	j.dlq = deadletter.New("joiner", j.sess, reg)
	j.ops = server.New(cfg.Ops, logger, reg)
	j.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, j.sess.Client()) })
	j.emitted = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_comparisons_total", Help: "Comparisons committed, by status."}, []string{"status"})
	j.pendingG = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_pending_joins", Help: "Joins waiting for a missing side."})
	j.duplicates = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_duplicate_inputs_total", Help: "Inputs dropped because their side had already arrived or been emitted."})
	j.restored = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_state_restored_total", Help: "Changelog entries read while restoring assigned partitions."})
	j.txns = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_transactions_total", Help: "Kafka transactions by result."}, []string{"result"})
	return j, nil
}

func (j *Joiner) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, ps := range assigned {
		for _, p := range ps {
			j.assigned[p] = true
			delete(j.revoked, p)
		}
	}
}

func (j *Joiner) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, ps := range revoked {
		for _, p := range ps {
			j.revoked[p] = true
			delete(j.assigned, p)
		}
	}
}

// Ops returns the operational server.
func (j *Joiner) Ops() *server.Server { return j.ops }

// Run checks co-partitioning, then joins until ctx ends; it commits the batch in progress.
func (j *Joiner) Run(ctx context.Context) error {
	defer j.sess.Close()
	if err := registry.Configure(ctx, j.cfg.Registry, j.codecs); err != nil {
		return err
	}
	n, err := topics.CheckCoPartitioned(ctx, j.sess.Client(), append(inputs, schemas.TopicJoinerState)...)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("joiner refuses to start: %w", err)
	}
	// Fence a crashed predecessor now (aborting its open transaction) rather than after the
	// broker's transaction timeout.
	if _, _, err := j.sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("init transactional producer: %w", err)
	}
	j.logger.Info("joiner starting", "group", j.cfg.Group, "instance_id", j.cfg.InstanceID, "partitions", n,
		"expected_shadows", j.cfg.ExpectedShadows, "window", j.cfg.Window.String(), "grace", j.cfg.Grace.String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return j.ops.Run(gctx) })
	g.Go(func() error { return j.loop(gctx) })
	return g.Wait()
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
		fs.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
				return
			}
			if msg := err.Error(); msg != lastErr {
				lastErr = msg
				j.logger.Warn("fetch error", "topic", topic, "partition", partition, "err", err)
			}
		})
		bctx := context.WithoutCancel(ctx)
		if err := j.applyAssignment(bctx); err != nil {
			return err
		}
		if fs.Empty() && !j.state.due(j.now()) {
			continue
		}
		if err := j.transact(bctx, fs); err != nil {
			return err
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
	}
	if len(assigned) == 0 {
		return nil
	}
	start := time.Now()
	n, err := j.restore(ctx, assigned)
	if err != nil {
		return fmt.Errorf("restore join state: %w", err)
	}
	j.restored.Add(float64(n))
	j.logger.Info("join state restored", "partitions", len(assigned), "entries", n, "pending", j.state.size(), "took", time.Since(start).String())
	return nil
}

// restore reads partitions' changelog up to its last stable offset.
func (j *Joiner) restore(ctx context.Context, parts map[int32]bool) (int, error) {
	for p := range parts {
		j.state.drop(p)
		j.state.part(p)
	}
	adm := kadm.NewClient(j.sess.Client())
	ends, err := adm.ListCommittedOffsets(ctx, schemas.TopicJoinerState)
	if err != nil {
		return 0, err
	}
	offsets := map[int32]kgo.Offset{}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if parts[o.Partition] && o.Offset > 0 {
			offsets[o.Partition] = kgo.NewOffset().AtStart()
			remaining[o.Partition] = o.Offset
		}
	})
	if len(offsets) == 0 {
		return 0, nil
	}
	// Control records (transaction markers) are kept so that the end of the log is seen even
	// when it is a marker: reading stops at the last stable offset, never at a timeout.
	cl, err := kgo.NewClient(append(j.cfg.Kafka.Opts(),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{schemas.TopicJoinerState: offsets}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.KeepControlRecords(),
	)...)
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	n := 0
	for len(remaining) > 0 {
		fs := cl.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			return n, err
		}
		fs.EachRecord(func(r *kgo.Record) {
			end, ok := remaining[r.Partition]
			if !ok || r.Offset >= end {
				return
			}
			if r.Offset+1 >= end {
				delete(remaining, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			var c *schemas.Comparison
			if r.Value != nil {
				v, err := j.codecs.Comparison.Decode(ctx, r.Value)
				if err != nil {
					return // a corrupt entry loses one join's state, never the process
				}
				c = &v
			}
			j.state.restore(r.Partition, string(r.Key), c)
			n++
		})
	}
	return n, nil
}

// transact handles one batch in one transaction.
func (j *Joiner) transact(ctx context.Context, fs kgo.Fetches) error {
	if err := j.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	now := j.now()
	var out []schemas.Comparison
	var recs []*kgo.Record
	fs.EachRecord(func(r *kgo.Record) {
		var (
			c   *schemas.Comparison
			err error
		)
		switch r.Topic {
		case schemas.TopicInference:
			var ev schemas.InferenceEvent
			if ev, err = j.codecs.Inference.Decode(ctx, r.Value); err == nil {
				c = j.state.addChampion(r.Partition, ev, now)
			}
		case schemas.TopicShadow:
			var res schemas.ShadowResult
			if res, err = j.codecs.Shadow.Decode(ctx, r.Value); err == nil {
				c = j.state.addShadow(r.Partition, res, now)
			}
		}
		if err != nil {
			recs = append(recs, deadletter.Record("joiner", r, deadletter.ReasonDecode, err))
			j.dlq.Count(deadletter.ReasonDecode)
		}
		if c != nil {
			out = append(out, *c)
		}
	})
	out = append(out, j.state.expire(now)...)
	var err error
	for _, c := range out {
		v, eerr := j.codecs.Comparison.Encode(nil, c)
		if eerr != nil {
			err = fmt.Errorf("encode comparison: %w", eerr)
			break
		}
		recs = append(recs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
	}
	for _, ch := range j.state.changes() {
		rec := &kgo.Record{Topic: schemas.TopicJoinerState, Key: []byte(ch.id)}
		switch {
		case ch.pending != nil:
			state := ch.pending.cmp
			state.Status, state.EmittedAt = schemas.StatusPending, ch.pending.firstSeen
			rec.Value, err = j.codecs.Comparison.Encode(nil, state)
		case !ch.emittedAt.IsZero():
			rec.Value, err = j.codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: ch.id, Status: schemas.StatusEmitted, EmittedAt: ch.emittedAt})
		}
		if err != nil {
			break
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
	if endErr != nil {
		j.state.rollback()
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if !committed {
		j.state.rollback()
		j.txns.WithLabelValues("aborted").Inc()
		return nil
	}
	j.duplicates.Add(float64(j.state.dupes))
	j.state.commit()
	j.txns.WithLabelValues("committed").Inc()
	for _, c := range out {
		j.emitted.WithLabelValues(c.Status).Inc()
	}
	j.pendingG.Set(float64(j.state.size()))
	j.backpressure()
	return nil
}

func (j *Joiner) backpressure() {
	full := j.state.size() >= j.cfg.MaxPending
	switch {
	case full && !j.paused:
		j.sess.Client().PauseFetchTopics(inputs...)
		j.paused = true
		j.logger.Warn("pending joins at limit: fetching paused", "pending", j.state.size())
	case !full && j.paused:
		j.sess.Client().ResumeFetchTopics(inputs...)
		j.paused = false
	}
}
