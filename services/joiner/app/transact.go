package app

// One batch, one Kafka transaction: decode and check the inputs, join, emit, record the
// changes of the join and label state, commit or roll back.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
)

// loop consumes with the current session until ctx ends or the session fails. It polls for
// at most a second, so joins expire and backpressure is re-evaluated while nothing arrives.
func (j *Joiner) loop(ctx context.Context) error {
	opts := consume.Options{MaxRecords: j.cfg.MaxBatch, Tick: time.Second, Drain: j.cfg.ShutdownTimeout}
	return consume.Loop(ctx, j.sess, j.logger, opts, func(bctx context.Context, fs kgo.Fetches) error {
		return j.batch(ctx, bctx, fs)
	})
}

// batch applies the rebalances noted since the last batch, then handles fs (possibly empty)
// in one transaction when there is anything to do. Restoring runs under ctx (it stops at
// shutdown); the transaction runs under bctx (the batch in progress at shutdown finishes
// within the shutdown timeout).
func (j *Joiner) batch(ctx, bctx context.Context, fs kgo.Fetches) error {
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
		return nil
	}
	entries, err := j.transact(bctx, fs)
	if err != nil {
		return err
	}
	if j.labels != nil {
		j.labels.submit(ctx, entries)
	}
	return nil
}

// batchOutput is what one batch's transaction produces: final comparisons, labeled
// comparisons, and every record (comparisons, changelog changes, dead letters).
type batchOutput struct {
	final, labeled []schemas.Comparison
	recs           []*kgo.Record
}

// transact handles one batch in one transaction and returns the label-state entries it
// committed (to apply to Postgres). An aborted batch's state changes are rolled back and it
// returns no error; an error means the session must be replaced.
func (j *Joiner) transact(ctx context.Context, fs kgo.Fetches) ([]labelstore.Entry, error) {
	j.progress.Begin()
	var b batchOutput
	err := consume.Transact(ctx, j.sess, func() ([]*kgo.Record, error) {
		var err error
		b, err = j.build(ctx, fs)
		return b.recs, err
	})
	if err != nil {
		j.state.rollback()
		if j.labels != nil {
			j.labels.aborted()
		}
		if !errors.Is(err, consume.ErrAborted) {
			return nil, err
		}
		j.logger.Warn("batch aborted; it will be consumed again", "err", err)
		j.txns.WithLabelValues("aborted").Inc()
		j.progress.Failed(err)
		return nil, nil
	}
	j.progress.Done()
	j.duplicates.Add(float64(j.state.dupes))
	j.state.commit()
	j.txns.WithLabelValues("committed").Inc()
	for _, c := range b.final {
		j.emitted.WithLabelValues(c.Status).Inc()
	}
	var entries []labelstore.Entry
	if j.labels != nil {
		j.labels.committed(b.labeled)
		for _, r := range b.recs {
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
	j.observe(j.now())
	j.backpressure()
	return entries, nil
}

// build decodes and checks the batch's inputs, joins them, expires what is due, takes the
// ready labeled comparisons and returns everything the transaction must produce. An error
// (an encoding failure: a bug, not bad input) aborts the batch.
func (j *Joiner) build(ctx context.Context, fs kgo.Fetches) (batchOutput, error) {
	j.flow.observe(fs, j.now())
	now := j.now()
	var b batchOutput
	fs.EachRecord(func(r *kgo.Record) {
		c, rec, err := j.input(ctx, r, now)
		if err != nil {
			reason := deadletter.ReasonDecode
			if errors.Is(err, schemas.ErrInvalid) {
				reason = deadletter.ReasonInvalid
			}
			b.recs = append(b.recs, deadletter.Record("joiner", r, reason, err))
			j.dlq.Count(reason)
		}
		if rec != nil {
			b.recs = append(b.recs, rec)
		}
		if c != nil {
			b.final = append(b.final, *c)
		}
	})
	b.final = append(b.final, j.state.expire(now, j.cfg.MaxBatch)...)
	for _, c := range b.final {
		v, err := j.codecs.Comparison.Encode(nil, c)
		if err != nil {
			return b, fmt.Errorf("encode comparison: %w", err)
		}
		b.recs = append(b.recs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
		if j.labels != nil {
			b.recs = append(b.recs, stateRecord(j.labelsTopic, labelstore.KindPrediction, c.RequestID, c.EventTime, v, c.Experiment))
		}
	}
	if j.labels != nil {
		var markers []*kgo.Record
		b.labeled, markers = j.labels.take(j.labelsTopic, j.codecs, now, j.cfg.MaxBatch)
		for _, c := range b.labeled {
			v, err := j.codecs.Comparison.Encode(nil, c)
			if err != nil {
				return b, fmt.Errorf("encode labeled comparison: %w", err)
			}
			b.recs = append(b.recs, &kgo.Record{Topic: schemas.TopicComparisons, Key: []byte(c.RequestID), Value: v})
		}
		b.recs = append(b.recs, markers...)
	}
	for _, ch := range j.state.changes() {
		rec, err := changeRecord(j.codecs, j.stateTopic, ch)
		if err != nil {
			return b, err
		}
		b.recs = append(b.recs, rec)
	}
	return b, nil
}

// input decodes, checks and joins one input record. It returns the comparison the record
// completes (if any), a label-state record to produce (if any), or the reason the record must
// be dead-lettered.
func (j *Joiner) input(ctx context.Context, r *kgo.Record, now time.Time) (*schemas.Comparison, *kgo.Record, error) {
	switch r.Topic {
	case schemas.TopicInference:
		ev, err := j.codecs.Inference.Decode(ctx, r.Value)
		if err == nil {
			err = j.valid(r, ev.RequestID, j.cfg.Limits.Inference(ev, now))
		}
		if err != nil {
			return nil, nil, err
		}
		j.flow.seen(r.Topic, ev.EventTime)
		return j.state.addChampion(r.Partition, ev, now), nil, nil
	case schemas.TopicShadow:
		res, err := j.codecs.Shadow.Decode(ctx, r.Value)
		if err == nil {
			err = j.valid(r, res.RequestID, j.cfg.Limits.Shadow(res, now))
		}
		if err != nil {
			return nil, nil, err
		}
		j.flow.seen(r.Topic, res.EventTime)
		return j.state.addShadow(r.Partition, res, now), nil, nil
	case schemas.TopicLabels:
		lab, err := j.codecs.Label.Decode(ctx, r.Value)
		if err == nil {
			err = j.valid(r, lab.RequestID, j.cfg.Limits.Label(lab, now))
		}
		if err != nil {
			return nil, nil, err
		}
		return nil, j.labels.onLabel(j.labelsTopic, r.Value, lab, now), nil
	}
	return nil, nil, nil
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
