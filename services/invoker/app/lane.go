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
	"github.com/understudy-ml/understudy/services/platform/logchange"
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

// newLane builds a lane's client; it does not touch the network.
func (inv *Invoker) newLane(name, group, txnID string, handle batchHandler) (*lane, error) {
	sess, err := kgo.NewGroupTransactSession(append(inv.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(group),
		// Static membership: a restarted replica takes its place back at once instead of
		// waiting for its predecessor's session to time out.
		kgo.InstanceID("understudy-invoker-"+inv.cfg.InstanceID),
		kgo.ConsumeTopics(schemas.TopicInference),
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
	var warn logchange.Warner
	for {
		fs := l.sess.PollRecords(ctx, l.maxBatch)
		if ctx.Err() != nil || fs.IsClientClosed() {
			return nil
		}
		var fatal error
		fs.EachError(func(topic string, partition int32, err error) {
			if f := consume.Fatal(err); f != nil {
				fatal = f
			}
			if !errors.Is(err, context.Canceled) {
				warn.Warn(l.logger, "fetch error", err, "topic", topic, "partition", partition)
			}
		})
		if fatal != nil {
			return fmt.Errorf("lane %s: %w", l.name, fatal)
		}
		if fs.Empty() {
			if len(fs.Errors()) > 0 {
				// Errors only (the client retries them): do not spin while it does.
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
			continue
		}
		if err := l.transact(ctx, fs); err != nil {
			return fmt.Errorf("lane %s: %w", l.name, err)
		}
	}
}

// transact handles one batch in one transaction. ctx ending does not interrupt it: handlers
// see it to stop pacing and finish quickly.
func (l *lane) transact(ctx context.Context, fs kgo.Fetches) error {
	l.progress.Begin()
	if err := l.sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	out, err := l.handle(ctx, fs)
	commit := kgo.TryCommit
	bg, cancel := consume.DrainContext(ctx, l.drain)
	defer cancel()
	if err == nil {
		if err = l.sess.ProduceSync(bg, out...).FirstErr(); err != nil {
			l.logger.Warn("producing results failed; aborting the batch", "err", err)
		}
	}
	if err != nil {
		commit = kgo.TryAbort
	}
	committed, endErr := l.sess.End(bg, commit)
	if endErr != nil {
		return fmt.Errorf("end transaction: %w", endErr)
	}
	if committed {
		l.progress.Done()
		l.m.transactions.WithLabelValues("committed").Inc()
	} else {
		l.progress.Failed(err)
		l.m.transactions.WithLabelValues("aborted").Inc()
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
