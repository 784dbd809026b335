package app

// Flow control: input alignment between the champion and shadow topics, and backpressure at
// join.max-pending.

import (
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

// alignment is how far (in event time) one of the champion and shadow topics may run ahead of
// the other while the other has a backlog. Without it, a member catching up on a backlog reads
// whichever topic the broker serves first, and every record of that topic becomes a pending
// join waiting for a side that is still in the log (memory grows with the backlog, and at
// join.max-pending joins expire incomplete). Kafka Streams synchronizes its inputs by
// timestamp for the same reason.
const alignment = time.Second

// flow tracks, per join input topic, the latest event time processed and the backlog (records
// behind the high watermark) seen in the latest fetch of each partition.
type flow struct {
	watermark map[string]time.Time
	lag       map[string]map[int32]int64
	delivered map[string]time.Time // when the topic last delivered records (or its lag was measured)
}

func newFlow() *flow {
	return &flow{watermark: map[string]time.Time{}, lag: map[string]map[int32]int64{}, delivered: map[string]time.Time{}}
}

func (f *flow) observe(fs kgo.Fetches, now time.Time) {
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if n := len(p.Records); n > 0 {
			if f.lag[p.Topic] == nil {
				f.lag[p.Topic] = map[int32]int64{}
			}
			f.lag[p.Topic][p.Partition] = p.HighWatermark - p.Records[n-1].Offset - 1
			f.delivered[p.Topic] = now
		}
	})
}

// setLag records a partition's backlog measured from offsets (at assignment, before any fetch).
func (f *flow) setLag(topic string, partition int32, lag int64, now time.Time) {
	if f.lag[topic] == nil {
		f.lag[topic] = map[int32]int64{}
	}
	f.lag[topic][partition] = lag
	f.delivered[topic] = now
}

func (f *flow) seen(topic string, eventTime time.Time) {
	if eventTime.After(f.watermark[topic]) {
		f.watermark[topic] = eventTime
	}
}

// backlog reports whether a partition of topic is more than backlogRecords behind its high
// watermark while the topic keeps delivering records. The threshold ignores transaction
// markers (the shadow topic is transactional, so its high watermark stays past the last
// record); the delivery condition ignores lags that reading cannot reduce (aborted records at
// the end of a partition count in the high watermark but are never delivered). Aligning only
// matters for large backlogs being read, and must never wait on a topic that is quiet.
func (f *flow) backlog(topic string, now time.Time) bool {
	if now.Sub(f.delivered[topic]) > backlogQuiet {
		return false
	}
	for _, n := range f.lag[topic] {
		if n > backlogRecords {
			return true
		}
	}
	return false
}

const (
	backlogRecords = 1000
	backlogQuiet   = 2 * time.Second
)

// ahead returns the join input that runs more than alignment ahead of the other while the
// other still has a backlog, or "". A topic not read yet is behind any topic that has been
// read, when it has a backlog.
func (f *flow) ahead(now time.Time) string {
	inf, sh := f.watermark[schemas.TopicInference], f.watermark[schemas.TopicShadow]
	switch {
	case inf.IsZero() && sh.IsZero():
		return ""
	case inf.IsZero():
		if f.backlog(schemas.TopicInference, now) {
			return schemas.TopicShadow
		}
		return ""
	case sh.IsZero():
		if f.backlog(schemas.TopicShadow, now) {
			return schemas.TopicInference
		}
		return ""
	case inf.Sub(sh) > alignment && f.backlog(schemas.TopicShadow, now):
		return schemas.TopicInference
	case sh.Sub(inf) > alignment && f.backlog(schemas.TopicInference, now):
		return schemas.TopicShadow
	}
	return ""
}

// backpressure pauses the input that runs ahead of the other (see alignment), and both join
// inputs while join.max-pending joins are pending (labels keep flowing: they create no
// pending join). Paused topics resume as soon as the condition ends.
func (j *Joiner) backpressure() {
	want := map[string]bool{}
	if a := j.flow.ahead(j.now()); a != "" {
		want[a] = true
	}
	if full := j.state.size() >= j.cfg.MaxPending; full {
		want[schemas.TopicInference], want[schemas.TopicShadow] = true, true
		if !j.paused[schemas.TopicShadow] || !j.paused[schemas.TopicInference] {
			j.logger.Warn("pending joins at limit: fetching paused", "pending", j.state.size())
		}
	}
	for _, t := range []string{schemas.TopicInference, schemas.TopicShadow} {
		switch {
		case want[t] && !j.paused[t]:
			j.sess.Client().PauseFetchTopics(t)
		case !want[t] && j.paused[t]:
			j.sess.Client().ResumeFetchTopics(t)
		}
	}
	j.paused = want
}
