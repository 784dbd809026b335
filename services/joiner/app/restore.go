package app

// The joiner's restore on assignment: label state caught up from Postgres and its changelog,
// join state rebuilt from the state changelog.

import (
	"context"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/labelstore"
)

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
