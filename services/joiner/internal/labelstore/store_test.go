package labelstore

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

func startStore(t *testing.T, width time.Duration) *Store {
	t.Helper()
	ctx := context.Background()
	pg, stop, err := pgrun.StartTemp(ctx)
	if err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(func() { _ = stop() })
	db, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	s := New(db, "test", width)
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// epoch is a retention horizon that keeps everything.
var epoch = time.Unix(0, 0)

func ids(rs []Ready) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = fmt.Sprintf("%d/%s:%s+%s", r.Partition, r.RequestID, r.Comparison, r.Label)
	}
	sort.Strings(out)
	return out
}

// TestApplyIsIdempotentAndReportsReadyOnce drives the store through labels before and after
// predictions, duplicates, a match, a re-apply of everything (as after a crash) and retention.
func TestApplyIsIdempotentAndReportsReadyOnce(t *testing.T) {
	ctx := context.Background()
	s := startStore(t, time.Hour)
	t0 := time.Date(2026, 11, 20, 10, 30, 0, 0, time.UTC)
	log := []Entry{
		{Kind: KindLabel, Partition: 0, Offset: 0, RequestID: "early", EventTime: t0.Add(-time.Minute), Value: []byte("L1")},
		{Kind: KindPrediction, Partition: 0, Offset: 1, RequestID: "late-label", EventTime: t0, Value: []byte("C2")},
		{Kind: KindPrediction, Partition: 1, Offset: 0, RequestID: "never", EventTime: t0, Value: []byte("C3")},
		{Kind: KindLabel, Partition: 1, Offset: 1, RequestID: "orphan", EventTime: t0, Value: []byte("L4"), Experiment: "x"},
	}
	ready, _, err := s.Apply(ctx, log, epoch)
	if err != nil || len(ready) != 0 {
		t.Fatalf("first apply: %v %v", ids(ready), err)
	}
	// The prediction of the early label arrives (next bucket), and a label two hours later.
	more := []Entry{
		{Kind: KindPrediction, Partition: 0, Offset: 2, RequestID: "early", EventTime: t0.Add(2 * time.Minute), Value: []byte("C1")},
		{Kind: KindLabel, Partition: 0, Offset: 3, RequestID: "late-label", EventTime: t0.Add(2 * time.Hour), Value: []byte("L2")},
	}
	ready, _, err = s.Apply(ctx, more, epoch)
	if got := ids(ready); err != nil || len(got) != 2 || got[0] != "0/early:C1+L1" || got[1] != "0/late-label:C2+L2" {
		t.Fatalf("second apply: %v %v", got, err)
	}
	// A crash before the labeled comparisons were committed: re-applying reports nothing new,
	// and the ready queue still holds both.
	if ready, _, err = s.Apply(ctx, append(append([]Entry(nil), log...), more...), epoch); err != nil || len(ready) != 0 {
		t.Fatalf("re-apply: %v %v", ids(ready), err)
	}
	q, err := s.LoadReady(ctx, []int32{0, 1})
	if err != nil || len(q) != 2 {
		t.Fatalf("ready queue: %v %v", ids(q), err)
	}
	// Both get matched; a duplicate label afterwards makes nothing ready again.
	match := []Entry{
		{Kind: KindMatched, Partition: 0, Offset: 4, RequestID: "early"},
		{Kind: KindMatched, Partition: 0, Offset: 5, RequestID: "late-label"},
		{Kind: KindLabel, Partition: 0, Offset: 6, RequestID: "early", EventTime: t0.Add(3 * time.Hour), Value: []byte("L1b")},
	}
	if ready, _, err = s.Apply(ctx, match, epoch); err != nil || len(ready) != 0 {
		t.Fatalf("match: %v %v", ids(ready), err)
	}
	if q, err = s.LoadReady(ctx, []int32{0, 1}); err != nil || len(q) != 0 {
		t.Fatalf("ready queue after match: %v %v", ids(q), err)
	}
	offs, err := s.Offsets(ctx, []int32{0, 1, 2})
	if err != nil || offs[0] != 7 || offs[1] != 2 || offs[2] != 0 {
		t.Fatalf("offsets %v %v", offs, err)
	}
	// Retention at 12:00 drops the 10:00 bucket of both tables: the orphan label and the
	// unlabeled prediction are counted; the 12:00 and 13:00 label buckets stay.
	res, err := s.Retain(ctx, t0.Add(90*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Orphaned) != 1 || res.Orphaned["x"] != 1 || res.Unlabeled != 1 || res.Buckets != 2 {
		t.Fatalf("retain: %+v", res)
	}
	// Orphan counting must not count matched requests whose prediction survives elsewhere:
	// nothing left to drop at the same cutoff.
	if other := New(s.db, "other", 24*time.Hour); !errors.Is(other.Migrate(ctx), ErrBucketMismatch) {
		t.Fatal("a joiner with another bucket width was accepted")
	}
	if res, err = s.Retain(ctx, t0.Add(90*time.Minute)); err != nil || res.Buckets != 0 || len(res.Orphaned) != 0 || res.Unlabeled != 0 {
		t.Fatalf("second retain: %+v %v", res, err)
	}
	// A late prediction for a dropped bucket recreates it and is stored again.
	if _, _, err = s.Apply(ctx, []Entry{{Kind: KindPrediction, Partition: 2, Offset: 0, RequestID: "x", EventTime: t0, Value: []byte("C")}}, epoch); err != nil {
		t.Fatal(err)
	}
	// Past the retention horizon, entries are not stored (Retain would drop them at once),
	// but their offsets count.
	_, skipped, err := s.Apply(ctx, []Entry{{Kind: KindLabel, Partition: 3, Offset: 41, RequestID: "old", EventTime: t0, Value: []byte("L")}}, t0.Add(2*time.Hour))
	if err != nil || skipped != 1 {
		t.Fatalf("skipped %d, %v", skipped, err)
	}
	if offs, err := s.Offsets(ctx, []int32{3}); err != nil || offs[3] != 42 {
		t.Fatalf("offsets after a skipped entry: %v %v", offs, err)
	}
	rows, err := s.Rows(ctx)
	if err != nil || len(rows) != 3 {
		t.Fatalf("rows %v %v", rows, err)
	}
}
