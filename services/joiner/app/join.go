package app

import (
	"sort"
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

// topicPartition identifies an input partition.
type topicPartition struct {
	topic     string
	partition int32
}

// pending is a join waiting for its missing sides.
type pending struct {
	champion  *schemas.InferenceEvent
	shadows   map[string]schemas.ShadowResult
	firstSeen time.Time
	partition int32
	offsets   map[string]int64 // lowest input offset per topic that contributed to this join
}

// joinState aligns champion events and shadow results by request id. It is not safe for
// concurrent use. A join completes when the champion and every expected shadow have arrived,
// or expires window after its first input (processing time); each request id is emitted once
// while it is remembered (2×window after emission), later duplicates are counted and dropped.
type joinState struct {
	expected []string
	window   time.Duration
	pending  map[string]*pending
	emitted  map[string]time.Time
	consumed map[topicPartition]int64 // next offset to consume per input partition
	dupes    int
}

func newJoinState(expected []string, window time.Duration) *joinState {
	return &joinState{
		expected: expected, window: window,
		pending:  map[string]*pending{},
		emitted:  map[string]time.Time{},
		consumed: map[topicPartition]int64{},
	}
}

func (j *joinState) entry(id string, tp topicPartition, offset int64, now time.Time) *pending {
	j.consumed[tp] = offset + 1
	if _, done := j.emitted[id]; done {
		j.dupes++
		return nil
	}
	p := j.pending[id]
	if p == nil {
		p = &pending{shadows: map[string]schemas.ShadowResult{}, firstSeen: now, partition: tp.partition, offsets: map[string]int64{}}
		j.pending[id] = p
	}
	if o, ok := p.offsets[tp.topic]; !ok || offset < o {
		p.offsets[tp.topic] = offset
	}
	return p
}

// addChampion records a champion event and returns the comparison it completes, if any.
func (j *joinState) addChampion(ev schemas.InferenceEvent, tp topicPartition, offset int64, now time.Time) *schemas.Comparison {
	p := j.entry(ev.RequestID, tp, offset, now)
	if p == nil {
		return nil
	}
	if p.champion != nil {
		j.dupes++
		return nil
	}
	p.champion = &ev
	return j.completeIf(ev.RequestID, p, now)
}

// addShadow records a shadow result and returns the comparison it completes, if any.
func (j *joinState) addShadow(res schemas.ShadowResult, tp topicPartition, offset int64, now time.Time) *schemas.Comparison {
	p := j.entry(res.RequestID, tp, offset, now)
	if p == nil {
		return nil
	}
	if _, seen := p.shadows[res.Shadow]; seen {
		j.dupes++
		return nil
	}
	p.shadows[res.Shadow] = res
	return j.completeIf(res.RequestID, p, now)
}

func (j *joinState) completeIf(id string, p *pending, now time.Time) *schemas.Comparison {
	if p.champion == nil {
		return nil
	}
	for _, s := range j.expected {
		if _, ok := p.shadows[s]; !ok {
			return nil
		}
	}
	c := j.emit(id, p, now)
	return &c
}

// expire emits every join older than the window, incomplete.
func (j *joinState) expire(now time.Time) []schemas.Comparison {
	var out []schemas.Comparison
	for id, p := range j.pending {
		if now.Sub(p.firstSeen) >= j.window {
			out = append(out, j.emit(id, p, now))
		}
	}
	for id, at := range j.emitted {
		if now.Sub(at) >= 2*j.window {
			delete(j.emitted, id)
		}
	}
	return out
}

func (j *joinState) emit(id string, p *pending, now time.Time) schemas.Comparison {
	delete(j.pending, id)
	j.emitted[id] = now
	c := schemas.Comparison{RequestID: id, EmittedAt: now}
	names := make([]string, 0, len(p.shadows))
	for n := range p.shadows {
		names = append(names, n)
	}
	sort.Strings(names)
	shadowErr := false
	for _, n := range names {
		r := p.shadows[n]
		c.Experiment, c.Tenant, c.EventTime = r.Experiment, r.Tenant, r.EventTime
		c.Shadows = append(c.Shadows, schemas.Outcome{
			Name: r.Shadow, Version: r.Model.Version, Role: r.Role, Status: r.Response.Status,
			Prediction: r.Response.Prediction, Latency: r.Latency, Error: r.Error,
		})
		shadowErr = shadowErr || r.Error != nil
	}
	missing := len(p.shadows) < len(j.expected)
	if ev := p.champion; ev != nil {
		c.Experiment, c.Tenant, c.EventTime = ev.Experiment, ev.Tenant, ev.EventTime
		c.Champion = &schemas.Outcome{
			Name: ev.Model.Name, Version: ev.Model.Version, Role: schemas.RoleChampion, Status: ev.Response.Status,
			Prediction: ev.Response.Prediction, Latency: ev.Latency, Error: ev.Error,
		}
	}
	switch {
	case p.champion == nil:
		c.Status = schemas.StatusChampionMissing
	case missing:
		c.Status = schemas.StatusShadowMissing
	case shadowErr:
		c.Status = schemas.StatusShadowError
	default:
		c.Status = schemas.StatusComplete
	}
	return c
}

// commitOffsets returns, per consumed input partition, the offset that is safe to commit:
// the lowest offset still held by a pending join, or the next offset to consume. Committing
// it means a restart re-reads every input of every pending join (at-least-once; duplicates
// of emitted joins are dropped while remembered).
func (j *joinState) commitOffsets() map[topicPartition]int64 {
	out := make(map[topicPartition]int64, len(j.consumed))
	for tp, next := range j.consumed {
		out[tp] = next
	}
	for _, p := range j.pending {
		for topic, off := range p.offsets {
			tp := topicPartition{topic, p.partition}
			if cur, ok := out[tp]; ok && off < cur {
				out[tp] = off
			}
		}
	}
	return out
}

// drop forgets the state of partitions this member no longer owns; their new owner rebuilds
// it from the committed offsets.
func (j *joinState) drop(partitions map[int32]bool) {
	for id, p := range j.pending {
		if partitions[p.partition] {
			delete(j.pending, id)
		}
	}
	for tp := range j.consumed {
		if partitions[tp.partition] {
			delete(j.consumed, tp)
		}
	}
}
