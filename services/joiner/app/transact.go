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
	"github.com/understudy-ml/understudy/services/joiner/labelstore"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
)

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
