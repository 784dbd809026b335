package app

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func champEv(id string, at time.Time) schemas.InferenceEvent {
	return schemas.InferenceEvent{RequestID: id, Experiment: "e", EventTime: at, Model: schemas.ModelRef{Name: "m"}, Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(1)}}
}

func shadowRes(id, name string, at time.Time, failed bool) schemas.ShadowResult {
	r := schemas.ShadowResult{RequestID: id, Experiment: "e", Shadow: name, EventTime: at, Response: schemas.HTTPResponse{Status: 200}}
	if failed {
		r.Error = &schemas.Error{Kind: "timeout"}
	}
	return r
}

func TestJoinStatusesWindowsAndDuplicates(t *testing.T) {
	j := newJoinState(testPolicy([]string{"a", "b"}, time.Minute, 5*time.Second))
	var got []schemas.Comparison
	add := func(c *schemas.Comparison) {
		if c != nil {
			got = append(got, *c)
		}
	}
	add(j.addShadow(2, shadowRes("r1", "b", t0, false), t0)) // out of order
	add(j.addShadow(2, shadowRes("r1", "a", t0, false), t0))
	add(j.addChampion(2, champEv("r1", t0), t0))
	add(j.addChampion(2, champEv("r2", t0), t0))
	add(j.addShadow(2, shadowRes("r2", "a", t0, true), t0))
	add(j.addShadow(2, shadowRes("r2", "b", t0, false), t0))
	add(j.addChampion(2, champEv("r3", t0), t0.Add(30*time.Second))) // closes by event time, not first seen + 65 s
	add(j.addShadow(2, shadowRes("r3", "a", t0, false), t0))
	add(j.addShadow(3, shadowRes("r4", "a", t0, false), t0.Add(10*time.Second)))
	add(j.addChampion(2, champEv("r1", t0), t0)) // duplicate of an emitted request
	add(j.addShadow(2, shadowRes("r3", "a", t0, false), t0))
	replay := shadowRes("r3", "b", t0, false)
	replay.RunID = "replay-1"
	add(j.addShadow(2, replay, t0)) // replay results are not part of the live join
	if len(got) != 2 || j.dupes != 2 {
		t.Fatalf("before expiry: %d comparisons, %d dupes", len(got), j.dupes)
	}
	j.commit()
	// Event time on partition 2 advances past r3's window; partition 3 is idle.
	add(j.addChampion(2, champEv("r5", t0.Add(66*time.Second)), t0.Add(66*time.Second)))
	got = append(got, j.expire(t0.Add(66*time.Second), 1<<30)...)
	if len(got) != 3 || got[2].RequestID != "r3" || got[2].Status != schemas.StatusShadowMissing {
		t.Fatalf("event-time expiry: %+v", got)
	}
	got = append(got, j.expire(t0.Add(75*time.Second), 1<<30)...) // r4 by processing time
	status := map[string]string{}
	for _, c := range got {
		status[c.RequestID] = c.Status
	}
	want := map[string]string{"r1": schemas.StatusComplete, "r2": schemas.StatusShadowError, "r3": schemas.StatusShadowMissing, "r4": schemas.StatusChampionMissing}
	for id, s := range want {
		if status[id] != s {
			t.Errorf("%s: %q, want %q", id, status[id], s)
		}
	}
}

// TestFutureEventTimesDoNotMoveTheWatermark: records dated far ahead of the clock (a fast
// producer clock, or a hostile one) must not close other requests' joins early.
func TestFutureEventTimesDoNotMoveTheWatermark(t *testing.T) {
	j := newJoinState(testPolicy([]string{"a"}, time.Minute, 5*time.Second))
	now := t0
	if c := j.addChampion(1, champEv("waiting", t0.Add(-10*time.Second)), now); c != nil {
		t.Fatalf("completed without its shadow: %+v", c)
	}
	for i := range 8 {
		j.addChampion(1, champEv(fmt.Sprintf("future-%d", i), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)), now)
	}
	if got := j.expire(now.Add(time.Second), 1<<30); len(got) != 0 {
		t.Fatalf("future event times closed %d joins: %+v", len(got), got)
	}
	if c := j.addShadow(1, shadowRes("waiting", "a", t0.Add(-10*time.Second), false), now.Add(2*time.Second)); c == nil || c.Status != schemas.StatusComplete {
		t.Fatalf("join after future records: %+v", c)
	}
}

// TestRollbackRestoresTheBatch: an aborted transaction must leave the state as it was, or a
// retried batch would see its own inputs as duplicates.
func TestRollbackRestoresTheBatch(t *testing.T) {
	j := newJoinState(testPolicy([]string{"a"}, time.Minute, 0))
	j.addChampion(0, champEv("r1", t0), t0)
	j.commit()
	if c := j.addShadow(0, shadowRes("r1", "a", t0, false), t0); c == nil {
		t.Fatal("join should complete")
	}
	j.addChampion(0, champEv("r2", t0), t0)
	j.rollback()
	if c := j.addShadow(0, shadowRes("r1", "a", t0, false), t0); c == nil || c.Status != schemas.StatusComplete {
		t.Fatalf("after rollback the retried input must complete the join again, got %+v", c)
	}
	if _, ok := j.parts[0].pending["r2"]; ok {
		t.Fatal("r2 survived the rollback")
	}
}

// TestChangesRestoreTheSameState: what the changelog gets is enough to rebuild the state.
func TestChangesRestoreTheSameState(t *testing.T) {
	j := newJoinState(testPolicy([]string{"a", "b"}, time.Minute, 0))
	j.addChampion(1, champEv("p1", t0), t0)
	j.addShadow(1, shadowRes("p1", "a", t0, false), t0)
	j.addChampion(1, champEv("done", t0), t0)
	j.addShadow(1, shadowRes("done", "a", t0, false), t0)
	j.addShadow(1, shadowRes("done", "b", t0, false), t0)
	changes := j.changes()
	j.commit()
	k := newJoinState(testPolicy([]string{"a", "b"}, time.Minute, 0))
	for _, ch := range changes {
		var c *schemas.Comparison
		switch {
		case ch.pending != nil:
			v := ch.pending.cmp
			v.Status, v.EmittedAt = schemas.StatusPending, ch.pending.firstSeen
			c = &v
		case !ch.emittedAt.IsZero():
			c = &schemas.Comparison{RequestID: ch.id, Status: schemas.StatusEmitted, EmittedAt: ch.emittedAt}
		}
		k.restore(ch.partition, ch.id, c)
	}
	if c := k.addShadow(1, shadowRes("p1", "b", t0, false), t0); c == nil || c.Status != schemas.StatusComplete || c.Champion == nil {
		t.Fatalf("restored pending join did not complete: %+v", c)
	}
	if c := k.addShadow(1, shadowRes("done", "b", t0, false), t0); c != nil || k.dupes != 1 {
		t.Fatal("restored emitted marker did not drop the duplicate")
	}
}

func testPolicy(expected []string, window, grace time.Duration) *policy {
	return &policy{def: &rules{expected: expected, horizon: window + grace, labelWindow: 7 * 24 * time.Hour}}
}

// TestPerExperimentRules: each experiment waits for its own shadows and for its own window.
func TestPerExperimentRules(t *testing.T) {
	p := testPolicy([]string{"a"}, time.Minute, 0)
	p.exps = map[string]*rules{"slow": {expected: []string{"x", "y"}, horizon: 10 * time.Minute}}
	j := newJoinState(p)
	slow := champEv("s1", t0)
	slow.Experiment = "slow"
	if c := j.addChampion(0, slow, t0); c != nil {
		t.Fatal("completed without shadows")
	}
	sx := shadowRes("s1", "x", t0, false)
	sx.Experiment = "slow"
	if c := j.addShadow(0, sx, t0); c != nil {
		t.Fatal("completed with one of two shadows")
	}
	if c := j.addChampion(0, champEv("d1", t0), t0); c != nil {
		t.Fatal("default experiment completed without its shadow")
	}
	// Two minutes later the default join has expired; the slow experiment's has not.
	out := j.expire(t0.Add(2*time.Minute), 1<<30)
	if len(out) != 1 || out[0].RequestID != "d1" || out[0].Status != schemas.StatusShadowMissing {
		t.Fatalf("after 2m: %+v", out)
	}
	sy := shadowRes("s1", "y", t0, false)
	sy.Experiment = "slow"
	if c := j.addShadow(0, sy, t0.Add(3*time.Minute)); c == nil || c.Status != schemas.StatusComplete || len(c.Shadows) != 2 {
		t.Fatalf("slow experiment: %+v", c)
	}
	if p.maxHorizon() != 10*time.Minute || p.maxLabelWindow() != 7*24*time.Hour {
		t.Fatalf("max horizon %v, label window %v", p.maxHorizon(), p.maxLabelWindow())
	}
}

// TestFlowAlignment: the input more than a second ahead in event time is paused only while the
// other still has a backlog (so a dead shadow never stops the champion side).
func TestFlowAlignment(t *testing.T) {
	f := newFlow()
	if f.ahead(t0) != "" {
		t.Fatal("empty flow is ahead")
	}
	// Only the shadow topic has been read, and the inference topic has a backlog.
	f.seen(schemas.TopicShadow, t0)
	f.setLag(schemas.TopicInference, 0, 50000, t0)
	if got := f.ahead(t0); got != schemas.TopicShadow {
		t.Fatalf("ahead = %q, want the shadow topic (the inference topic is unread)", got)
	}
	f = newFlow()
	f.seen(schemas.TopicInference, t0.Add(10*time.Second))
	f.seen(schemas.TopicShadow, t0)
	if f.ahead(t0) != "" {
		t.Fatal("ahead without knowing the shadow backlog")
	}
	f.delivered[schemas.TopicShadow], f.delivered[schemas.TopicInference] = t0, t0
	f.lag[schemas.TopicShadow] = map[int32]int64{0: 0, 1: 1}
	if f.ahead(t0) != "" {
		t.Fatal("a transaction marker is not a backlog")
	}
	f.lag[schemas.TopicShadow][1] = 5000
	if got := f.ahead(t0); got != schemas.TopicInference {
		t.Fatalf("ahead = %q, want the inference topic", got)
	}
	f.lag[schemas.TopicShadow][1] = 0 // the shadow side caught up with its log: nothing to wait for
	if got := f.ahead(t0); got != "" {
		t.Fatalf("ahead = %q with no shadow backlog", got)
	}
	f.seen(schemas.TopicShadow, t0.Add(12*time.Second))
	f.lag[schemas.TopicInference] = map[int32]int64{3: 7000}
	if got := f.ahead(t0); got != schemas.TopicShadow {
		t.Fatalf("ahead = %q, want the shadow topic", got)
	}
	// A lag the topic does not reduce (aborted records at the end of a partition) stops
	// counting once the topic has delivered nothing for a while.
	if got := f.ahead(t0.Add(3 * time.Second)); got != "" {
		t.Fatalf("ahead = %q although the inference topic has been quiet for 3 s", got)
	}
	f.seen(schemas.TopicInference, t0.Add(11500*time.Millisecond))
	if got := f.ahead(t0); got != "" {
		t.Fatalf("ahead = %q within the alignment", got)
	}
}

// TestExpireLimit: a burst of expiries is spread over several calls (transactions).
func TestExpireLimit(t *testing.T) {
	j := newJoinState(testPolicy([]string{"a"}, time.Minute, 0))
	for i := range 5 {
		j.addChampion(0, champEv(fmt.Sprintf("r%d", i), t0), t0)
	}
	later := t0.Add(2 * time.Minute)
	if got := j.expire(later, 2); len(got) != 2 || !j.due(later) {
		t.Fatalf("first call: %d expired, due %v", len(got), j.due(later))
	}
	if got := j.expire(later, 10); len(got) != 3 || j.size() != 0 {
		t.Fatalf("second call: %d expired, %d pending", len(got), j.size())
	}
}

// TestComparisonsKeepBodiesUpToTheLimit: the request and every response body reach the
// comparison as captured, cut at the limit and marked truncated when cut here or at capture.
func TestComparisonsKeepBodiesUpToTheLimit(t *testing.T) {
	p := testPolicy([]string{"a"}, time.Minute, 0)
	p.bodyLimit = 8
	j := newJoinState(p)
	ev := champEv("r1", t0)
	ev.Request.Body = []byte(`{"x":[1,2,3]}`)
	ev.Response.Body, ev.Response.Truncated = []byte(`{"p":1}`), true
	res := shadowRes("r1", "a", t0, true)
	res.Response.Body = []byte(`oops`)
	j.addChampion(0, ev, t0)
	c := j.addShadow(0, res, t0)
	if c == nil {
		t.Fatal("no comparison")
	}
	if string(c.RequestBody) != `{"x":[1,` || !c.RequestTruncated {
		t.Errorf("request body %q truncated=%v, want the first 8 bytes, truncated", c.RequestBody, c.RequestTruncated)
	}
	if string(c.Champion.Body) != `{"p":1}` || !c.Champion.BodyTruncated {
		t.Errorf("champion body %q truncated=%v, want it whole and marked truncated at capture", c.Champion.Body, c.Champion.BodyTruncated)
	}
	if s := c.Shadows[0]; string(s.Body) != "oops" || s.BodyTruncated {
		t.Errorf("shadow body %q truncated=%v, want it whole", s.Body, s.BodyTruncated)
	}
	ev.Request.Body[0] = 'X' // the comparison must not alias the record's buffer
	if c.RequestBody[0] != '{' {
		t.Error("the comparison aliases the input record's buffer")
	}
}

// TestComparisonsCarryTheDeclaredSegments: the experiments file's segment keys are read
// from the champion's captured request into the comparison, unknown when unreadable.
func TestComparisonsCarryTheDeclaredSegments(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.ExperimentsFile = servicetest.File(t, "experiments.yaml", `experiments:
  - name: e
    shadows: [{name: a, url: "http://shadow:1"}]
    segments:
      keys:
        - {name: f0, pointer: /inputs/0/data/0, buckets: [1]}
        - {name: region, header: X-Region}
        - {name: champion_version, model_version: champion}
        - {name: shadow_version, model_version: shadow}
`)
	p, err := cfg.policy()
	if err != nil {
		t.Fatal(err)
	}
	j := newJoinState(p)
	ev := champEv("r1", t0)
	ev.Model.Version = "6"
	ev.Request.Body = []byte(`{"inputs":[{"data":[1.5,0]}]}`)
	j.addChampion(0, ev, t0)
	c := j.addShadow(0, shadowRes("r1", "a", t0, false), t0)
	if c == nil {
		t.Fatal("no comparison")
	}
	want := []schemas.SegmentValue{{Key: "f0", Value: ">= 1"}, {Key: "region", Value: schemas.SegmentUnknown}, {Key: "champion_version", Value: "6"}}
	if !reflect.DeepEqual(c.Segments, want) {
		t.Fatalf("segments %v, want %v (the shadow's version is the aggregator's to read)", c.Segments, want)
	}
}
