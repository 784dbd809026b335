package app

// The joiner's restore on assignment: label state caught up from Postgres and its changelog,
// join state rebuilt from the state changelog.

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
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
		c, err := stateOf(ctx, j.codecs, r)
		if err != nil {
			j.logger.Warn("skipping a join-state record", "err", err) // one join's state lost, never the process
			return nil
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
