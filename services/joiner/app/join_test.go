package app

import (
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

var (
	t0      = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	infTP   = topicPartition{schemas.TopicInference, 2}
	shadTP  = topicPartition{schemas.TopicShadow, 2}
	champEv = func(id string) schemas.InferenceEvent {
		return schemas.InferenceEvent{RequestID: id, Experiment: "e", Model: schemas.ModelRef{Name: "m"}, Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(1)}}
	}
	shadowRes = func(id, name string, failed bool) schemas.ShadowResult {
		r := schemas.ShadowResult{RequestID: id, Experiment: "e", Shadow: name, Response: schemas.HTTPResponse{Status: 200}}
		if failed {
			r.Error = &schemas.Error{Kind: "timeout"}
		}
		return r
	}
)

func TestJoinStatuses(t *testing.T) {
	j := newJoinState([]string{"a", "b"}, time.Minute)
	var got []schemas.Comparison
	add := func(c *schemas.Comparison) {
		if c != nil {
			got = append(got, *c)
		}
	}
	// r1: complete, shadows first (out of order).
	add(j.addShadow(shadowRes("r1", "b", false), shadTP, 10, t0))
	add(j.addShadow(shadowRes("r1", "a", false), shadTP, 11, t0))
	add(j.addChampion(champEv("r1"), infTP, 5, t0))
	// r2: one shadow failed.
	add(j.addChampion(champEv("r2"), infTP, 6, t0))
	add(j.addShadow(shadowRes("r2", "a", true), shadTP, 12, t0))
	add(j.addShadow(shadowRes("r2", "b", false), shadTP, 13, t0))
	// r3: shadow b never answers; r4: champion never arrives.
	add(j.addChampion(champEv("r3"), infTP, 7, t0))
	add(j.addShadow(shadowRes("r3", "a", false), shadTP, 14, t0))
	add(j.addShadow(shadowRes("r4", "a", false), shadTP, 15, t0.Add(time.Second)))
	// Duplicates of emitted and pending sides are dropped.
	add(j.addChampion(champEv("r1"), infTP, 8, t0))
	add(j.addShadow(shadowRes("r3", "a", false), shadTP, 16, t0))
	if len(got) != 2 || j.dupes != 2 {
		t.Fatalf("before expiry: %d comparisons, %d dupes", len(got), j.dupes)
	}
	// The pending r3 (inference offset 7, shadow 14) holds the commit point back.
	off := j.commitOffsets()
	if off[infTP] != 7 || off[shadTP] != 14 {
		t.Fatalf("commit offsets = %v, want inference 7 and shadow 14", off)
	}
	if n := len(j.expire(t0.Add(59 * time.Second))); n != 0 {
		t.Fatalf("%d joins expired before the window", n)
	}
	got = append(got, j.expire(t0.Add(61*time.Second))...)
	status := map[string]string{}
	for _, c := range got {
		status[c.RequestID] = c.Status
	}
	want := map[string]string{"r1": schemas.StatusComplete, "r2": schemas.StatusShadowError, "r3": schemas.StatusShadowMissing, "r4": schemas.StatusChampionMissing}
	for id, s := range want {
		if status[id] != s {
			t.Errorf("%s: status %q, want %q", id, status[id], s)
		}
	}
	if len(got) != 4 {
		t.Fatalf("%d comparisons, want 4", len(got))
	}
	off = j.commitOffsets()
	if off[infTP] != 9 || off[shadTP] != 17 {
		t.Fatalf("commit offsets after expiry = %v, want next offsets 9 and 17", off)
	}
	j.drop(map[int32]bool{2: true})
	if len(j.pending) != 0 || len(j.commitOffsets()) != 0 {
		t.Fatal("drop kept state of a revoked partition")
	}
}
