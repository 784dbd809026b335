package app

import (
	"container/heap"
	"sort"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// pending is a join waiting for its missing sides: a partial Comparison (champion nil until it
// arrives), when it was first seen (processing time) and its experiment's rules.
type pending struct {
	cmp       schemas.Comparison
	firstSeen time.Time
	rules     *rules
	slot      [2]int // positions in the partition's expiry heaps (byEvent, bySeen); -1 when out
}

// rules are one experiment's join settings.
type rules struct {
	expected    []string      // shadows a complete comparison needs
	horizon     time.Duration // window + grace
	labelWindow time.Duration // label event time minus request event time
	segments    []segment.Key // keys whose values each comparison carries
}

// policy maps experiments to their rules; experiments not listed get the defaults.
type policy struct {
	def       *rules
	exps      map[string]*rules
	bodyLimit int // bytes of each body a comparison keeps
}

// cut returns at most limit bytes of body (a copy, so the record's buffer is not retained) and
// whether body, as captured (truncated) or by this cut, is shorter than the original.
func cut(body []byte, truncated bool, limit int) ([]byte, bool) {
	if len(body) > limit {
		return append([]byte(nil), body[:limit]...), true
	}
	if len(body) == 0 {
		return nil, truncated
	}
	return append([]byte(nil), body...), truncated
}

func (p *policy) of(experiment string) *rules {
	if r := p.exps[experiment]; r != nil {
		return r
	}
	return p.def
}

// maxHorizon is the longest horizon of any experiment.
func (p *policy) maxHorizon() time.Duration {
	h := p.def.horizon
	for _, r := range p.exps {
		h = max(h, r.horizon)
	}
	return h
}

// maxLabelWindow is the longest label window of any experiment.
func (p *policy) maxLabelWindow() time.Duration {
	w := p.def.labelWindow
	for _, r := range p.exps {
		w = max(w, r.labelWindow)
	}
	return w
}

// partState is the state of one input partition.
type partState struct {
	pending   map[string]*pending
	emitted   map[string]time.Time // request ids already emitted, when (processing time)
	watermark time.Time            // latest event time seen on the partition

	// Expiry indexes, so that a batch costs time in proportion to what expires, not to the
	// state's size. A join leaves both heaps when it is emitted, so that they never hold
	// completed joins.
	byEvent deadlines   // pending joins by event-time deadline (event time + horizon)
	bySeen  deadlines   // pending joins by processing-time deadline (first seen + horizon)
	emitQ   []emitEntry // emitted markers, in (roughly) the order they were set
}

type emitEntry struct {
	id string
	at time.Time
}

// deadlines is a min-heap of pending joins by one of their two deadlines (kind 0: event time
// + horizon, compared with the watermark; kind 1: first seen + horizon, compared with the
// clock). Each join knows its position (slot) so that it can be removed or fixed in place.
type deadlines struct {
	kind  int
	items []*pending
}

func (h *deadlines) at(pd *pending) time.Time {
	if h.kind == 0 {
		return pd.cmp.EventTime.Add(pd.rules.horizon)
	}
	return pd.firstSeen.Add(pd.rules.horizon)
}

func (h *deadlines) Len() int           { return len(h.items) }
func (h *deadlines) Less(a, b int) bool { return h.at(h.items[a]).Before(h.at(h.items[b])) }
func (h *deadlines) Swap(a, b int) {
	h.items[a], h.items[b] = h.items[b], h.items[a]
	h.items[a].slot[h.kind], h.items[b].slot[h.kind] = a, b
}

func (h *deadlines) Push(x any) {
	pd := x.(*pending)
	pd.slot[h.kind] = len(h.items)
	h.items = append(h.items, pd)
}

func (h *deadlines) Pop() any {
	n := len(h.items) - 1
	pd := h.items[n]
	h.items[n] = nil
	h.items = h.items[:n]
	pd.slot[h.kind] = -1
	return pd
}

// due reports whether the earliest deadline is at or before t.
func (h *deadlines) due(t time.Time) bool {
	return len(h.items) > 0 && !h.at(h.items[0]).After(t)
}

// remove takes pd out of the heap if it is in it.
func (h *deadlines) remove(pd *pending) {
	if i := pd.slot[h.kind]; i >= 0 && i < len(h.items) && h.items[i] == pd {
		heap.Remove(h, i)
	}
}

func newPartState() *partState {
	return &partState{pending: map[string]*pending{}, emitted: map[string]time.Time{}, byEvent: deadlines{kind: 0}, bySeen: deadlines{kind: 1}}
}

// index adds a pending join to the expiry indexes.
func (ps *partState) index(pd *pending) {
	pd.slot = [2]int{-1, -1}
	heap.Push(&ps.byEvent, pd)
	heap.Push(&ps.bySeen, pd)
}

// unindex takes a pending join out of the expiry indexes.
func (ps *partState) unindex(pd *pending) {
	ps.byEvent.remove(pd)
	ps.bySeen.remove(pd)
}

// change is one key's state as written to the changelog: a pending join, an emitted marker,
// or nothing (a tombstone).
type change struct {
	partition int32
	id        string
	pending   *pending
	emittedAt time.Time // set for an emitted marker
}

// undoEntry is a key's state before the current batch touched it.
type undoEntry struct {
	partition int32
	pending   *pending
	emitted   time.Time
	hadEmit   bool
}

// joinState aligns champion events and shadow results by request id, partition by partition.
// It is not safe for concurrent use.
//
// A join completes when the champion and every shadow its experiment expects have arrived. It
// closes incomplete when the partition's event-time watermark passes its event time by the
// experiment's window+grace, or, for idle partitions, window+grace after it was first seen
// (processing time). Each request id is emitted once; emitted ids are remembered for twice the
// longest window+grace to drop late duplicates.
// Every change of the current batch is recorded so that it can be written to the changelog in
// the batch's transaction (changes) and undone if the transaction aborts (rollback).
type joinState struct {
	policy *policy
	parts  map[int32]*partState
	undo   map[string]undoEntry
	dirty  map[string]int32
	dupes  int
}

func newJoinState(p *policy) *joinState {
	return &joinState{policy: p, parts: map[int32]*partState{}, undo: map[string]undoEntry{}, dirty: map[string]int32{}}
}

func (j *joinState) part(p int32) *partState {
	ps := j.parts[p]
	if ps == nil {
		ps = newPartState()
		j.parts[p] = ps
	}
	return ps
}

// touch records a key's state before its first change in this batch.
func (j *joinState) touch(p int32, id string) {
	j.dirty[id] = p
	if _, ok := j.undo[id]; ok {
		return
	}
	ps := j.part(p)
	u := undoEntry{partition: p}
	if pd := ps.pending[id]; pd != nil {
		c := *pd
		c.cmp.Shadows = append([]schemas.Outcome(nil), pd.cmp.Shadows...)
		u.pending = &c
	}
	u.emitted, u.hadEmit = ps.emitted[id]
	j.undo[id] = u
}

// entry returns the pending join of id, creating it; nil when id was already emitted.
func (j *joinState) entry(p int32, id, experiment string, eventTime, now time.Time) *pending {
	ps := j.part(p)
	// The watermark never runs ahead of the clock: a producer whose clock is fast (or a record
	// dated in the future) must not close other requests' joins early.
	if wm := minTime(eventTime, now); wm.After(ps.watermark) {
		ps.watermark = wm
	}
	if _, done := ps.emitted[id]; done {
		j.dupes++
		return nil
	}
	j.touch(p, id)
	pd := ps.pending[id]
	if pd == nil {
		pd = &pending{cmp: schemas.Comparison{RequestID: id, EventTime: eventTime}, firstSeen: now, rules: j.policy.of(experiment)}
		ps.pending[id] = pd
		ps.index(pd)
	}
	return pd
}

// addChampion records a champion event and returns the comparison it completes, if any.
func (j *joinState) addChampion(p int32, ev schemas.InferenceEvent, now time.Time) *schemas.Comparison {
	pd := j.entry(p, ev.RequestID, ev.Experiment, ev.EventTime, now)
	if pd == nil {
		return nil
	}
	if pd.cmp.Champion != nil {
		j.dupes++
		return nil
	}
	if !ev.EventTime.Equal(pd.cmp.EventTime) {
		pd.cmp.EventTime = ev.EventTime
		if i := pd.slot[0]; i >= 0 {
			heap.Fix(&j.part(p).byEvent, i)
		}
	}
	pd.cmp.Experiment, pd.cmp.Tenant = ev.Experiment, ev.Tenant
	pd.cmp.Segments = segment.Values(pd.rules.segments, ev.Request, ev.Model.Version)
	limit := j.policy.bodyLimit
	pd.cmp.RequestBody, pd.cmp.RequestTruncated = cut(ev.Request.Body, ev.Request.Truncated, limit)
	body, truncated := cut(ev.Response.Body, ev.Response.Truncated, limit)
	pd.cmp.Champion = &schemas.Outcome{
		Name: ev.Model.Name, Version: ev.Model.Version, Role: schemas.RoleChampion, Status: ev.Response.Status,
		Prediction: ev.Response.Prediction, Latency: ev.Latency, Error: ev.Error,
		Body: body, BodyTruncated: truncated,
	}
	return j.completeIf(p, pd, now)
}

// addShadow records a shadow result and returns the comparison it completes, if any. Replay
// results (with a run id) are not part of the live join and are ignored.
func (j *joinState) addShadow(p int32, res schemas.ShadowResult, now time.Time) *schemas.Comparison {
	if res.RunID != "" {
		return nil
	}
	pd := j.entry(p, res.RequestID, res.Experiment, res.EventTime, now)
	if pd == nil {
		return nil
	}
	for _, s := range pd.cmp.Shadows {
		if s.Name == res.Shadow {
			j.dupes++
			return nil
		}
	}
	if pd.cmp.Champion == nil {
		pd.cmp.Experiment, pd.cmp.Tenant = res.Experiment, res.Tenant
	}
	body, truncated := cut(res.Response.Body, res.Response.Truncated, j.policy.bodyLimit)
	pd.cmp.Shadows = append(pd.cmp.Shadows, schemas.Outcome{
		Name: res.Shadow, Version: res.Model.Version, Role: res.Role, Status: res.Response.Status,
		Prediction: res.Response.Prediction, Latency: res.Latency, Error: res.Error, Dispatch: res.Dispatch,
		Body: body, BodyTruncated: truncated,
	})
	return j.completeIf(p, pd, now)
}

func (j *joinState) completeIf(p int32, pd *pending, now time.Time) *schemas.Comparison {
	if pd.cmp.Champion == nil {
		return nil
	}
	have := map[string]bool{}
	for _, s := range pd.cmp.Shadows {
		have[s.Name] = true
	}
	for _, s := range pd.rules.expected {
		if !have[s] {
			return nil
		}
	}
	c := j.emit(p, pd, now)
	return &c
}

// due reports whether any join or emitted marker can expire at now.
func (j *joinState) due(now time.Time) bool {
	for _, ps := range j.parts {
		if ps.byEvent.due(ps.watermark) || ps.bySeen.due(now) ||
			len(ps.emitQ) > 0 && now.Sub(ps.emitQ[0].at) >= j.forget() {
			return true
		}
	}
	return false
}

// forget is how long emitted ids are remembered.
func (j *joinState) forget() time.Duration { return 2 * j.policy.maxHorizon() }

// expire closes every join past its window (by event time: the partition's watermark passed
// event time + horizon; or by processing time: first seen + horizon passed), incomplete, and
// forgets old emitted markers, at most limit of them (joins and markers) per call, so that a
// burst of expiries is spread over several transactions.
func (j *joinState) expire(now time.Time, limit int) []schemas.Comparison {
	var out []schemas.Comparison
	forgotten := 0
	for p, ps := range j.parts {
		closeTop := func(h *deadlines, until time.Time) {
			for h.due(until) && len(out)+forgotten < limit {
				pd := h.items[0]
				j.touch(p, pd.cmp.RequestID)
				out = append(out, j.emit(p, pd, now)) // takes pd out of both heaps
			}
		}
		closeTop(&ps.byEvent, ps.watermark)
		closeTop(&ps.bySeen, now)
		forget := j.forget()
		n := 0
		for n < len(ps.emitQ) && now.Sub(ps.emitQ[n].at) >= forget && len(out)+forgotten < limit {
			e := ps.emitQ[n]
			if at, ok := ps.emitted[e.id]; ok && at.Equal(e.at) {
				j.touch(p, e.id)
				delete(ps.emitted, e.id)
				forgotten++
			}
			n++
		}
		ps.emitQ = ps.emitQ[n:]
	}
	sort.Slice(out, func(a, b int) bool { return out[a].RequestID < out[b].RequestID })
	return out
}

func (j *joinState) emit(p int32, pd *pending, now time.Time) schemas.Comparison {
	ps := j.part(p)
	id := pd.cmp.RequestID
	delete(ps.pending, id)
	ps.unindex(pd)
	ps.emitted[id] = now
	ps.emitQ = append(ps.emitQ, emitEntry{id: id, at: now})
	c := pd.cmp
	c.EmittedAt = now
	c.Shadows = append([]schemas.Outcome(nil), pd.cmp.Shadows...)
	sort.Slice(c.Shadows, func(a, b int) bool { return c.Shadows[a].Name < c.Shadows[b].Name })
	have := map[string]bool{}
	shadowErr := false
	for _, s := range c.Shadows {
		have[s.Name] = true
		shadowErr = shadowErr || s.Error != nil
	}
	missing := false
	for _, s := range pd.rules.expected {
		missing = missing || !have[s]
	}
	switch {
	case c.Champion == nil:
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

// changes returns the batch's changes for the changelog, in a stable order.
func (j *joinState) changes() []change {
	out := make([]change, 0, len(j.dirty))
	for id, p := range j.dirty {
		ps := j.part(p)
		c := change{partition: p, id: id, pending: ps.pending[id]}
		if at, ok := ps.emitted[id]; ok {
			c.emittedAt = at
		}
		out = append(out, c)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].id < out[b].id })
	return out
}

// commit forgets the undo log: the batch is durable.
func (j *joinState) commit() {
	clear(j.undo)
	clear(j.dirty)
	j.dupes = 0
}

// rollback restores every key the batch changed.
func (j *joinState) rollback() {
	for id, u := range j.undo {
		ps := j.part(u.partition)
		if cur := ps.pending[id]; cur != nil {
			ps.unindex(cur) // the batch's version of the join
		}
		if u.pending != nil {
			ps.pending[id] = u.pending
			ps.index(u.pending)
		} else {
			delete(ps.pending, id)
		}
		if u.hadEmit {
			ps.emitted[id] = u.emitted
			ps.emitQ = append(ps.emitQ, emitEntry{id: id, at: u.emitted})
		} else {
			delete(ps.emitted, id)
		}
	}
	clear(j.undo)
	clear(j.dirty)
	j.dupes = 0
}

// restore loads one changelog entry of partition p (nil c: the key was forgotten).
func (j *joinState) restore(p int32, id string, c *schemas.Comparison) {
	ps := j.part(p)
	if cur := ps.pending[id]; cur != nil {
		ps.unindex(cur)
	}
	delete(ps.pending, id)
	delete(ps.emitted, id)
	switch {
	case c == nil:
	case c.Status == schemas.StatusEmitted:
		ps.emitted[id] = c.EmittedAt
		ps.emitQ = append(ps.emitQ, emitEntry{id: id, at: c.EmittedAt})
	default:
		cmp := *c
		pd := &pending{cmp: cmp, firstSeen: c.EmittedAt, rules: j.policy.of(c.Experiment)}
		ps.pending[id] = pd
		ps.index(pd)
		if c.EventTime.After(ps.watermark) {
			ps.watermark = c.EventTime
		}
	}
}

// drop forgets a partition this member no longer owns.
func (j *joinState) drop(p int32) { delete(j.parts, p) }

// size returns the number of pending joins.
func (j *joinState) size() int {
	n := 0
	for _, ps := range j.parts {
		n += len(ps.pending)
	}
	return n
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
