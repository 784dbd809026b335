package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/progress"
)

// LaneGroup is the consumer group of the lane calling shadow of experiment, for an invoker
// whose --kafka.group is group. Each lane has its own group and transactional id, so its
// offsets and results commit independently of every other lane's.
func LaneGroup(group, experiment, shadow string) string {
	return group + "." + experiment + "." + shadow
}

// batchHandler turns one batch of inference events into the records to produce in the
// batch's transaction. It must not return before every call it started has finished.
type batchHandler func(ctx context.Context, fs kgo.Fetches) ([]*kgo.Record, error)

// lane is one consumer group and one transactional producer over the inference topic: each
// batch's output and consumed offsets commit together or not at all, and an aborted batch is
// consumed again. The intake lane dead-letters bad events; each shadow lane calls one shadow.
type lane struct {
	name     string // "intake" or "<experiment>/<shadow>"
	maxBatch int
	drain    time.Duration // how long the batch in progress at shutdown may take
	sess     *kgo.GroupTransactSession
	handle   batchHandler
	progress *progress.Tracker
	logger   *slog.Logger
	m        *metrics
	closing  sync.Once
}

// newLane builds a lane's client; it does not touch the network, and the client joins the
// lane's group only when run starts consuming.
func (inv *Invoker) newLane(name, group, txnID string, handle batchHandler) (*lane, error) {
	sess, err := kgo.NewGroupTransactSession(append(inv.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(group),
		// Static membership: a restarted replica takes its place back at once instead of
		// waiting for its predecessor's session to time out.
		kgo.InstanceID("understudy-invoker-"+inv.cfg.InstanceID),
		kgo.TransactionalID(txnID),
		kgo.TransactionTimeout(30*time.Second), // results are produced at the end of a batch, so transactions are short
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(inv.cfg.FetchMaxBytes),
		kgo.FetchMaxPartitionBytes(min(inv.cfg.FetchMaxBytes, 1<<20)),
		kgo.DefaultProduceTopic(schemas.TopicShadow),
	)...)
	if err != nil {
		return nil, fmt.Errorf("lane %s: kafka client: %w", name, err)
	}
	return &lane{
		name: name, maxBatch: inv.cfg.MaxBatch, drain: inv.cfg.ShutdownTimeout, sess: sess, handle: handle, progress: progress.New(inv.cfg.StallTimeout, time.Now),
		logger: inv.logger.With("lane", name), m: inv.m,
	}, nil
}

// run fences a crashed predecessor with the same transactional id (loading the producer id
// aborts its open transaction instead of waiting for the broker's timeout), then consumes
// until ctx ends, finishing and committing the batch in progress.
func (l *lane) run(ctx context.Context) error {
	if _, _, err := l.sess.Client().ProducerID(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("lane %s: init transactional producer: %w", l.name, err)
	}
	// The lane joins its group only now (newLane built the session without topics).
	l.sess.Client().AddConsumeTopics(schemas.TopicInference)
	opts := consume.Options{MaxRecords: l.maxBatch, Drain: l.drain}
	// The handlers see ctx, not the batch's drain context, so that they stop pacing and
	// finish quickly at shutdown; producing and committing get the drain.
	err := consume.Loop(ctx, l.sess, l.logger, opts, func(bctx context.Context, fs kgo.Fetches) error {
		return l.transact(ctx, bctx, fs)
	})
	if err != nil {
		return fmt.Errorf("lane %s: %w", l.name, err)
	}
	return nil
}

// transact handles one batch in one transaction: the handler runs under ctx, the produce and
// the commit under bctx.
func (l *lane) transact(ctx, bctx context.Context, fs kgo.Fetches) error {
	l.progress.Begin()
	err := consume.Transact(bctx, l.sess, func() ([]*kgo.Record, error) { return l.handle(ctx, fs) })
	switch {
	case err == nil:
		l.progress.Done()
		l.m.transactions.WithLabelValues("committed").Inc()
	case errors.Is(err, consume.ErrAborted):
		l.logger.Warn("batch aborted; it will be consumed again", "err", err)
		l.progress.Failed(err)
		l.m.transactions.WithLabelValues("aborted").Inc()
	default:
		return err
	}
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			l.m.lag.WithLabelValues(l.name, strconv.Itoa(int(p.Partition))).Set(float64(p.HighWatermark - p.Records[n-1].Offset - 1))
		}
	})
	return nil
}

// close leaves the group and closes the client; it is safe to call more than once.
func (l *lane) close() { l.closing.Do(l.sess.Close) }
