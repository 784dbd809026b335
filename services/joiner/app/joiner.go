// Package app is the joiner: it aligns champion inference events and shadow results by
// request id and emits one Comparison per request.
//
// Partition p of the inference and shadow topics is owned by one member (RangeBalancer over
// co-partitioned topics); the joiner refuses to start when their partition counts differ.
// Delivery: at-least-once. Offsets are committed only below the inputs of pending joins and
// after the comparisons of a batch are acknowledged, so nothing is lost across a crash; a
// restart may emit a request's comparison again (exactly-once is the joiner's own issue).
// Memory is bounded by join.max-pending: at the limit, fetching pauses until joins complete
// or expire, and lag grows instead of memory.
package app

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/consume"
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
	client *kgo.Client
	codecs *schemas.Codecs
	dlq    *deadletter.Publisher
	ops    *server.Server
	state  *joinState
	paused bool

	emitted    *prometheus.CounterVec
	pendingG   prometheus.Gauge
	duplicates prometheus.Counter
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
	j := &Joiner{cfg: cfg, logger: logger, now: time.Now, codecs: codecs, state: newJoinState(cfg.Shadows(), cfg.Window)}
	j.client, err = kgo.NewClient(append(cfg.Kafka.Opts(),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(inputs...),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.OnPartitionsRevoked(j.forget),
		kgo.OnPartitionsLost(j.forget),
		kgo.DefaultProduceTopic(schemas.TopicComparisons),
		kgo.ProducerLinger(2*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	j.dlq = deadletter.New("joiner", j.client, reg)
	j.ops = server.New(cfg.Ops, logger, reg)
	j.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, j.client) })
	j.emitted = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_comparisons_total", Help: "Comparisons emitted, by status."}, []string{"status"})
	j.pendingG = f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_pending_joins", Help: "Joins waiting for a missing side."})
	j.duplicates = f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_duplicate_inputs_total", Help: "Inputs dropped because their side had already arrived or been emitted."})
	return j, nil
}

// Ops returns the operational server.
func (j *Joiner) Ops() *server.Server { return j.ops }

// Run checks co-partitioning, then joins until ctx ends; it finishes the batch in progress.
func (j *Joiner) Run(ctx context.Context) error {
	defer j.client.Close()
	if err := registry.Configure(ctx, j.cfg.Registry, j.codecs); err != nil {
		return err
	}
	n, err := topics.CheckCoPartitioned(ctx, j.client, inputs...)
	if err != nil {
		return fmt.Errorf("joiner refuses to start: %w", err)
	}
	j.logger.Info("joiner starting", "group", j.cfg.Group, "partitions", n, "expected_shadows", j.cfg.ExpectedShadows, "window", j.cfg.Window.String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return j.ops.Run(gctx) })
	g.Go(func() error { return consume.Loop(gctx, j.client, j.logger, time.Second, j.handle) })
	return g.Wait()
}

func (j *Joiner) handle(ctx context.Context, fs kgo.Fetches) error {
	now := j.now()
	var out []schemas.Comparison
	var err error
	fs.EachRecord(func(r *kgo.Record) {
		if err != nil {
			return
		}
		tp := topicPartition{r.Topic, r.Partition}
		var c *schemas.Comparison
		switch r.Topic {
		case schemas.TopicInference:
			ev, derr := j.codecs.Inference.Decode(ctx, r.Value)
			if derr != nil {
				j.state.consumed[tp] = r.Offset + 1
				err = j.dlq.Publish(ctx, r, deadletter.ReasonDecode, derr)
				return
			}
			c = j.state.addChampion(ev, tp, r.Offset, now)
		case schemas.TopicShadow:
			res, derr := j.codecs.Shadow.Decode(ctx, r.Value)
			if derr != nil {
				j.state.consumed[tp] = r.Offset + 1
				err = j.dlq.Publish(ctx, r, deadletter.ReasonDecode, derr)
				return
			}
			c = j.state.addShadow(res, tp, r.Offset, now)
		}
		if c != nil {
			out = append(out, *c)
		}
	})
	if err != nil {
		return err
	}
	out = append(out, j.state.expire(now)...)
	if err := j.produce(ctx, out); err != nil {
		return err
	}
	if err := j.commit(ctx); err != nil {
		return err
	}
	j.duplicates.Add(float64(j.state.dupes))
	j.state.dupes = 0
	j.pendingG.Set(float64(len(j.state.pending)))
	j.backpressure()
	return nil
}

func (j *Joiner) produce(ctx context.Context, cs []schemas.Comparison) error {
	if len(cs) == 0 {
		return nil
	}
	recs := make([]*kgo.Record, 0, len(cs))
	for _, c := range cs {
		v, err := j.codecs.Comparison.Encode(nil, c)
		if err != nil {
			return fmt.Errorf("encode comparison: %w", err)
		}
		recs = append(recs, &kgo.Record{Key: []byte(c.RequestID), Value: v})
	}
	if err := j.client.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		return fmt.Errorf("produce comparisons: %w", err)
	}
	for _, c := range cs {
		j.emitted.WithLabelValues(c.Status).Inc()
	}
	return nil
}

func (j *Joiner) commit(ctx context.Context) error {
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for tp, off := range j.state.commitOffsets() {
		if offsets[tp.topic] == nil {
			offsets[tp.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[tp.topic][tp.partition] = kgo.EpochOffset{Epoch: -1, Offset: off}
	}
	if len(offsets) == 0 {
		return nil
	}
	var cerr error
	j.client.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err != nil {
			cerr = err
			return
		}
		for _, t := range resp.Topics {
			for _, p := range t.Partitions {
				if e := kerr.ErrorForCode(p.ErrorCode); e != nil {
					cerr = e
				}
			}
		}
	})
	if cerr != nil {
		return fmt.Errorf("commit offsets: %w", cerr)
	}
	return nil
}

func (j *Joiner) backpressure() {
	full := len(j.state.pending) >= j.cfg.MaxPending
	switch {
	case full && !j.paused:
		j.client.PauseFetchTopics(inputs...)
		j.paused = true
		j.logger.Warn("pending joins at limit: fetching paused", "pending", len(j.state.pending))
	case !full && j.paused:
		j.client.ResumeFetchTopics(inputs...)
		j.paused = false
	}
}

// forget drops the state of revoked or lost partitions. With BlockRebalanceOnPoll it runs
// only between batches, never concurrently with handle.
func (j *Joiner) forget(_ context.Context, _ *kgo.Client, lost map[string][]int32) {
	parts := map[int32]bool{}
	for _, ps := range lost {
		for _, p := range ps {
			parts[p] = true
		}
	}
	j.state.drop(parts)
}
