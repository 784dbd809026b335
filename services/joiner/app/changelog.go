package app

// The joiner's two changelogs, written in the batch's transaction and read back on
// assignment. This file is the only place that maps in-memory state to changelog records and
// back.
//
// Join state (compacted, keyed by request id): a pending join is its Comparison so far with
// status "pending" and EmittedAt holding when the join was first seen; an emitted request is
// a Comparison with only RequestID, status "emitted" and EmittedAt; a tombstone forgets the
// key.
//
// Label state (time-retained, keyed by request id): the record's value is the final
// comparison or the label event as encoded, with its kind, event time and experiment in
// headers.

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
)

// Label-state changelog headers: the entry kind and the event time (big-endian Unix micros).
const (
	headerLabelKind  = "understudy.label-state.kind"
	headerEventTime  = "understudy.label-state.event-time"
	headerExperiment = "understudy.label-state.experiment"
)

// changeRecord is the join-state changelog record of one change of the batch.
func changeRecord(codecs *schemas.Codecs, topic string, ch change) (*kgo.Record, error) {
	rec := &kgo.Record{Topic: topic, Key: []byte(ch.id)}
	var err error
	switch {
	case ch.pending != nil:
		state := ch.pending.cmp
		state.Status, state.EmittedAt = schemas.StatusPending, ch.pending.firstSeen
		rec.Value, err = codecs.Comparison.Encode(nil, state)
	case !ch.emittedAt.IsZero():
		rec.Value, err = codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: ch.id, Status: schemas.StatusEmitted, EmittedAt: ch.emittedAt})
	}
	if err != nil {
		return nil, fmt.Errorf("encode join state of %q: %w", ch.id, err)
	}
	return rec, nil
}

// stateOf reads a join-state changelog record back: the comparison it holds, or nil for a
// tombstone.
func stateOf(ctx context.Context, codecs *schemas.Codecs, r *kgo.Record) (*schemas.Comparison, error) {
	if r.Value == nil {
		return nil, nil
	}
	c, err := codecs.Comparison.Decode(ctx, r.Value)
	if err != nil {
		return nil, fmt.Errorf("join-state record %d/%d: %w", r.Partition, r.Offset, err)
	}
	return &c, nil
}

// stateRecord returns a label-state changelog record; keyed by the request id, it lands on the
// partition of the request's inputs.
func stateRecord(topic string, kind labelstore.Kind, id string, eventTime time.Time, value []byte, experiment string) *kgo.Record {
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], uint64(eventTime.UnixMicro()))
	r := &kgo.Record{
		Topic: topic, Key: []byte(id), Value: value,
		Headers: []kgo.RecordHeader{{Key: headerLabelKind, Value: []byte(kind.String())}, {Key: headerEventTime, Value: ts[:]}},
	}
	if experiment != "" {
		r.Headers = append(r.Headers, kgo.RecordHeader{Key: headerExperiment, Value: []byte(experiment)})
	}
	return r
}

// entryOf reads a label-state changelog record back.
func entryOf(r *kgo.Record) (labelstore.Entry, error) {
	e := labelstore.Entry{Partition: r.Partition, Offset: r.Offset, RequestID: string(r.Key), Value: r.Value}
	var kindOK, timeOK bool
	for _, h := range r.Headers {
		switch h.Key {
		case headerLabelKind:
			e.Kind, kindOK = labelstore.ParseKind(string(h.Value))
		case headerEventTime:
			if len(h.Value) == 8 {
				e.EventTime, timeOK = time.UnixMicro(int64(binary.BigEndian.Uint64(h.Value))).UTC(), true
			}
		case headerExperiment:
			e.Experiment = string(h.Value)
		}
	}
	if !kindOK || !timeOK {
		return e, fmt.Errorf("label-state record %d/%d lacks its kind or event time headers", r.Partition, r.Offset)
	}
	return e, nil
}
