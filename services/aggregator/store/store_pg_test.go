package store_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/pgtest"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

var t0 = time.Date(2026, 11, 26, 22, 0, 0, 0, time.UTC)

func comparison(r *rand.Rand, i int, at time.Time) schemas.Comparison {
	return schemas.Comparison{
		RequestID: fmt.Sprint(i), Experiment: "e", EventTime: at, Status: schemas.StatusComplete,
		Champion: &schemas.Outcome{Prediction: schemas.Number(r.Float64()), Latency: time.Duration(1000+r.IntN(500)) * time.Microsecond},
		Shadows:  []schemas.Outcome{{Name: "v7", Role: schemas.RoleCandidate, Prediction: schemas.Number(r.Float64()), Latency: 2 * time.Millisecond}},
	}
}

// TestApplyRollsUpFencesAndRetains: batches written over two days are answered over any range
// as the merge of the base windows; a replayed batch is refused (store.ErrFenced) and changes
// nothing; retention drops base windows but ranges still answer from the rollups.
func TestApplyRollsUpFencesAndRetains(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Start(t)
	s := store.New(db, "g", store.DefaultLevels(time.Minute))
	r := rand.New(rand.NewPCG(5, 6))
	all := map[window.Key]*window.Window{}
	var batches []store.Batch
	next := int64(0)
	for b := range 20 {
		batch := store.Batch{Windows: map[window.Key]*window.Window{}, Counts: map[store.CountKey]int64{}}
		for i := range 500 {
			// Event times spread over 48 hours from t0.
			at := t0.Add(time.Duration(r.Int64N(int64(48 * time.Hour))))
			c := comparison(r, b*500+i, at)
			window.Fold(batch.Windows, c, time.Minute, nil, window.Compare{})
			window.Fold(all, c, time.Minute, nil, window.Compare{})
			batch.Counts[store.CountKey{"e", at.Truncate(time.Minute), c.Status}]++
		}
		batch.Offsets = []store.Offset{{Topic: "t", Partition: 0, First: next, Next: next + 500}}
		next += 500
		if _, err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		batches = append(batches, batch)
	}
	if _, err := s.Apply(ctx, batches[5]); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("replayed batch: %v, want store.ErrFenced", err)
	}
	counts, err := store.Counts(ctx, db, "e")
	if err != nil || counts[schemas.StatusComplete] != 10000 {
		t.Fatalf("counts %v %v", counts, err)
	}
	check := func(from, to time.Time) {
		t.Helper()
		got, err := s.Range(ctx, "e", from, to)
		if err != nil {
			t.Fatal(err)
		}
		want := window.New()
		for k, w := range all {
			if !k.Start.Before(from.Truncate(time.Minute)) && k.Start.Before(to) {
				if err := want.Merge(w); err != nil {
					t.Fatal(err)
				}
			}
		}
		g := got["v7"]
		if g == nil {
			g = window.New()
		}
		if g.Total != want.Total || g.Agree != want.Agree || g.Champion.Latency.Count() != want.Champion.Latency.Count() {
			t.Fatalf("range %s..%s: total %d agree %d, want %d %d", from, to, g.Total, g.Agree, want.Total, want.Agree)
		}
		if d := g.Champion.Predictions.Quantile(0.5) - want.Champion.Predictions.Quantile(0.5); d > 0.01 || d < -0.01 {
			t.Fatalf("median differs by %v", d)
		}
	}
	ranges := func() {
		t.Helper()
		check(t0, t0.Add(48*time.Hour))
		check(t0.Add(90*time.Minute+17*time.Second), t0.Add(30*time.Hour+5*time.Minute))
		check(t0.Add(26*time.Hour), t0.Add(26*time.Hour+10*time.Minute))
	}
	ranges() // every rollup dirty: answered from base windows
	// 48 hours from 22:00 touch 48 hour windows and 3 day windows of the one shadow.
	if n, err := s.Rollup(ctx); err != nil || n != 48+3 {
		t.Fatalf("rolled up %d windows, want 51: %v", n, err)
	}
	var dirty int
	if err := db.QueryRow(ctx, `SELECT count(*) FROM aggregator_dirty`).Scan(&dirty); err != nil || dirty != 0 {
		t.Fatalf("%d rollups still dirty %v", dirty, err)
	}
	ranges() // answered from rollups
	// A new batch dirties one hour again: answers stay exact.
	extra := store.Batch{Windows: map[window.Key]*window.Window{}, Offsets: []store.Offset{{Topic: "t", Partition: 0, First: next, Next: next + 1}}}
	c := comparison(r, -1, t0.Add(26*time.Hour+time.Minute))
	window.Fold(extra.Windows, c, time.Minute, nil, window.Compare{})
	window.Fold(all, c, time.Minute, nil, window.Compare{})
	if _, err := s.Apply(ctx, extra); err != nil {
		t.Fatal(err)
	}
	ranges()
	if _, err := s.Rollup(ctx); err != nil {
		t.Fatal(err)
	}
	ranges()

	exps, err := s.Experiments(ctx)
	if err != nil || len(exps["e"]) != 1 || exps["e"][0].Total != 10001 || exps["e"][0].Role != schemas.RoleCandidate {
		t.Fatalf("experiments %v %v", exps, err)
	}
	// The first window is the earliest data's minute, not the start of its day's rollup.
	earliest := t0.Add(48 * time.Hour)
	for k := range all {
		if k.Start.Before(earliest) {
			earliest = k.Start
		}
	}
	if first, ok, err := s.FirstWindow(ctx, "e"); err != nil || !ok || !first.Equal(earliest) || !exps["e"][0].First.Equal(earliest) {
		t.Fatalf("first window %s (%v, %v), listed %s; want %s", first, ok, err, exps["e"][0].First, earliest)
	}
	// Retention: at t0+9 days base windows (7 days) of the first two days go, hours stay.
	deleted, err := s.Retain(ctx, t0.Add(9*24*time.Hour+time.Hour))
	if err != nil || deleted == 0 {
		t.Fatalf("retain %d %v", deleted, err)
	}
	got, err := s.Range(ctx, "e", t0, t0.Add(48*time.Hour))
	if err != nil || got["v7"].Total != 10001 {
		t.Fatalf("after retention %v %v", got, err)
	}
	if first, ok, err := s.FirstWindow(ctx, "e"); err != nil || !ok || !first.Equal(earliest.Truncate(time.Hour)) {
		t.Fatalf("first window after the base windows expired %s (%v, %v), want the hour %s", first, ok, err, earliest.Truncate(time.Hour))
	}
}

// TestSegmentWindowsRollUpAndReadApart: segment windows are stored, rolled up and read per
// value exactly as the in-memory fold has them, and they never add to the whole traffic's
// numbers (Range, Experiments).
func TestSegmentWindowsRollUpAndReadApart(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Start(t)
	s := store.New(db, "g", store.DefaultLevels(time.Minute))
	r := rand.New(rand.NewPCG(7, 8))
	seg := window.NewSegmenter(segment.Config{Keys: []segment.Key{{Name: "region", Header: "X-Region"}, {Name: "version", ModelVersion: segment.VersionShadow}}})
	all := map[window.Key]*window.Window{}
	for b := range 4 {
		batch := store.Batch{Windows: map[window.Key]*window.Window{}, Offsets: []store.Offset{{Topic: "t", Partition: 0, First: int64(b * 300), Next: int64(b*300 + 300)}}}
		for i := range 300 {
			c := comparison(r, b*300+i, t0.Add(time.Duration(r.Int64N(int64(3*time.Hour)))))
			c.Segments = []schemas.SegmentValue{{Key: "region", Value: []string{"eu", "us", "ap"}[r.IntN(3)]}}
			c.Shadows[0].Version = []string{"7", "8"}[b/2]
			window.FoldSegments(batch.Windows, c, time.Minute, nil, window.Compare{}, seg)
			window.FoldSegments(all, c, time.Minute, nil, window.Compare{}, seg)
		}
		if _, err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	check := func() {
		t.Helper()
		whole, err := s.Range(ctx, "e", t0, t0.Add(3*time.Hour))
		if err != nil || whole["v7"].Total != 1200 {
			t.Fatalf("whole traffic: %v %v, want 1200 requests", whole, err)
		}
		for _, key := range []string{"region", "version"} {
			got, err := s.RangeSegments(ctx, "e", key, t0, t0.Add(3*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]uint64{}
			for k, w := range all {
				if k, v, ok := window.SplitSegment(k.Segment); ok && k == key {
					want[v] += w.Total
				}
			}
			var sum uint64
			for v, n := range want {
				if g := got["v7"][v]; g == nil || g.Total != n {
					t.Fatalf("%s=%s: %v, want %d requests", key, v, g, n)
				}
				sum += n
			}
			if len(got["v7"]) != len(want) || sum != 1200 {
				t.Fatalf("%s: values %d (want %d), requests %d (want 1200)", key, len(got["v7"]), len(want), sum)
			}
		}
	}
	check() // from base windows, every rollup dirty
	if n, err := s.Rollup(ctx); err != nil || n == 0 {
		t.Fatalf("rolled up %d: %v", n, err)
	}
	check() // from the rollups
	exps, err := s.Experiments(ctx)
	if err != nil || len(exps["e"]) != 1 || exps["e"][0].Total != 1200 {
		t.Fatalf("experiments count the whole traffic once: %v %v", exps, err)
	}
}
