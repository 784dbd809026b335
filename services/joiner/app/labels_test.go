package app

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

// TestLabelStateRefusedByPostgresIsLeftOutAlone: an entry Postgres refuses for its data (a
// request id too large to index, had the edge limits been raised) is left out and counted;
// the entries around it are applied, and the applier does not retry for ever.
func TestLabelStateRefusedByPostgresIsLeftOutAlone(t *testing.T) {
	ctx := context.Background()
	pg, stop, err := pgrun.StartTemp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = stop() }()
	db, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	store := labelstore.New(db, "test", time.Hour)
	if err := store.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	l := newLabelJoin(store, testPolicy([]string{"a"}, time.Minute, 0), time.Hour, prometheus.NewRegistry())
	r := rand.New(rand.NewPCG(5, 6))
	huge := make([]byte, 20000)
	for i := range huge {
		huge[i] = byte('a' + r.IntN(26))
	}
	now := time.Now()
	entries := []labelstore.Entry{
		{Kind: labelstore.KindPrediction, Partition: 0, Offset: 10, RequestID: "r1", EventTime: now, Value: []byte("p1")},
		{Kind: labelstore.KindLabel, Partition: 0, Offset: 11, RequestID: string(huge), EventTime: now, Value: []byte("l")},
		{Kind: labelstore.KindLabel, Partition: 0, Offset: 12, RequestID: "r1", EventTime: now, Value: []byte("l1")},
	}
	var errs int
	actx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ready, err := l.apply(actx, entries, func(error) { errs++ })
	if err != nil {
		t.Fatalf("apply: %v (after %d errors)", err, errs)
	}
	if len(ready) != 1 || ready[0].RequestID != "r1" {
		t.Fatalf("ready %+v, want r1", ready)
	}
	if n := testutil.ToFloat64(l.rejected); n != 1 {
		t.Fatalf("%v entries left out, want 1", n)
	}
}
