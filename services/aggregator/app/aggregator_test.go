package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

// testEnv is what the aggregator's tests run against: a throwaway Postgres, an in-process
// broker with every topic, a producer to the comparisons topic, the codecs and a pool on the
// database. Everything is released when the test ends.
type testEnv struct {
	pgURL    string
	brokers  []string
	producer *kgo.Client
	codecs   *schemas.Codecs
	db       *pgxpool.Pool
}

func newTestEnv(t *testing.T, partitions int32) *testEnv {
	t.Helper()
	ctx := context.Background()
	pg, stop, err := pgrun.StartTemp(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stop() })
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.DefaultProduceTopic(schemas.TopicComparisons))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(producer.Close)
	db, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return &testEnv{pgURL: pg.URL, brokers: cluster.ListenAddrs(), producer: producer, codecs: codecs, db: db}
}

// config returns the aggregator's defaults pointed at the environment.
func (e *testEnv) config() Config {
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(e.brokers, ",")
	cfg.DatabaseURL = e.pgURL
	cfg.Ops.ListenAddr = "127.0.0.1:0"
	return cfg
}

// TestRestartAndReplayChangeNoCount runs the aggregator against real Postgres, stops it,
// rewinds the Kafka group to the beginning (as a replay would) and restarts it: counts must
// not move, because the offsets stored with the counts win.
func TestRestartAndReplayChangeNoCount(t *testing.T) {
	ctx := context.Background()
	env := newTestEnv(t, 3)
	codecs, producer, db := env.codecs, env.producer, env.db
	produce := func(from, n int) {
		for i := from; i < from+n; i++ {
			status := schemas.StatusComplete
			if i%5 == 0 {
				status = schemas.StatusShadowMissing
			}
			v, err := codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: fmt.Sprint("r", i), Experiment: "exp", EventTime: time.Now(), Status: status})
			if err != nil {
				t.Fatal(err)
			}
			if err := producer.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint("r", i)), Value: v}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	// run runs an aggregator until it has consumed all records (its stored offsets add up to
	// consumed) and counted want comparisons, then stops it.
	run := func(want, consumed int64) {
		t.Helper()
		cfg := env.config()
		a, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.Run(rctx) }()
		deadline := time.Now().Add(20 * time.Second)
		for {
			counts, err := store.Counts(ctx, db, "exp")
			total := counts[schemas.StatusComplete] + counts[schemas.StatusShadowMissing]
			offsets, oerr := store.StoredOffsets(ctx, db, cfg.Group)
			var read int64
			for _, o := range offsets[schemas.TopicComparisons] {
				read += o
			}
			if err == nil && oerr == nil && total == want && read == consumed {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("counts = %v (%v), consumed %d (%v); want total %d after %d records", counts, err, read, oerr, want, consumed)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	produce(0, 20)
	producer.ProduceSync(ctx, &kgo.Record{Key: []byte("junk"), Value: []byte("junk")}) // dead-lettered, not counted
	invalid, err := codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: "no-experiment", EventTime: time.Now(), Status: schemas.StatusComplete})
	if err != nil {
		t.Fatal(err)
	}
	producer.ProduceSync(ctx, &kgo.Record{Key: []byte("no-experiment"), Value: invalid}) // dead-lettered as invalid
	run(20, 22)
	run(20, 22) // restart: nothing new, nothing doubled
	produce(20, 10)
	run(30, 32)
	// Both bad records are in the dead-letter topic with their reasons.
	dlq, err := kgo.NewClient(kgo.SeedBrokers(env.brokers...), kgo.ConsumeTopics(schemas.TopicDeadLetter), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer dlq.Close()
	reasons := map[string]int{}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for len(reasons) < 2 && dctx.Err() == nil {
		dlq.PollFetches(dctx).EachRecord(func(r *kgo.Record) {
			for _, h := range r.Headers {
				if h.Key == schemas.HeaderDLQReason {
					reasons[string(h.Value)]++
				}
			}
		})
	}
	if reasons["decode"] < 1 || reasons["invalid"] < 1 {
		t.Fatalf("dead letters by reason %v", reasons)
	}
	counts, err := store.Counts(ctx, db, "exp")
	if err != nil {
		t.Fatal(err)
	}
	if counts[schemas.StatusShadowMissing] != 6 || counts[schemas.StatusComplete] != 24 {
		t.Fatalf("counts by status = %v, want 24 complete and 6 shadow_missing", counts)
	}
}

// TestPostgresRefusalIsolatesTheRecord: with the edge limits raised, a comparison whose
// experiment name Postgres cannot index (index row too large) is found by applying the
// batch's records one by one and dead-lettered; the records around it are counted once.
func TestPostgresRefusalIsolatesTheRecord(t *testing.T) {
	ctx := context.Background()
	env := newTestEnv(t, 1)
	codecs, producer, db := env.codecs, env.producer, env.db
	r := rand.New(rand.NewPCG(3, 4))
	huge := make([]byte, 20000) // incompressible, far over a btree row
	for i := range huge {
		huge[i] = byte('a' + r.IntN(26))
	}
	for i := range 21 {
		exp := "exp"
		if i == 10 {
			exp = string(huge)
		}
		v, err := codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: fmt.Sprint("r", i), Experiment: exp, EventTime: time.Now(), Status: schemas.StatusComplete})
		if err != nil {
			t.Fatal(err)
		}
		if err := producer.ProduceSync(ctx, &kgo.Record{Key: []byte(fmt.Sprint("r", i)), Value: v}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	cfg := env.config()
	cfg.Limits.MaxName = 1 << 20
	reg := prometheus.NewRegistry()
	a, err := New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- a.Run(rctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		counts, err := store.Counts(ctx, db, "exp")
		offsets, _ := store.StoredOffsets(ctx, db, cfg.Group)
		if err == nil && counts[schemas.StatusComplete] == 20 && offsets[schemas.TopicComparisons][0] == 21 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("aggregator stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts %v (%v), offsets %v", counts, err, offsets)
		}
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var invalid float64
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "understudy_deadletter_records_total" && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == "invalid" {
				invalid = m.GetCounter().GetValue()
			}
		}
	}
	if invalid != 1 {
		t.Fatalf("%v records dead-lettered as invalid, want 1", invalid)
	}
}

func TestFenceStreak(t *testing.T) {
	var f fenceStreak
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	if f.refused(t0) != 0 || f.check(t0, 20*time.Second) != nil {
		t.Fatal("one refusal (a rebalance) must not make the replica unready")
	}
	if d := f.refused(t0.Add(5 * time.Second)); d != 5*time.Second {
		t.Fatalf("streak %s", d)
	}
	if f.check(t0.Add(6*time.Second), 20*time.Second) == nil {
		t.Fatal("refused again and again: must be unready")
	}
	if f.check(t0.Add(40*time.Second), 20*time.Second) != nil {
		t.Fatal("no refusal for longer than the limit (caught up after seeking): must be ready")
	}
	f.refused(t0.Add(41 * time.Second))
	f.applied()
	if f.check(t0.Add(42*time.Second), 20*time.Second) != nil {
		t.Fatal("an applied batch ends the streak")
	}
}

// TestFencedAggregatorTurnsUnreadyThenExits: batches refused one after another (another
// replica keeps writing the partition's offsets ahead of this one) make /readyz fail, and
// once the streak outlasts the stall timeout the aggregator stops with ErrFencedOut instead of
// idling while it looks ready.
func TestFencedAggregatorTurnsUnreadyThenExits(t *testing.T) {
	ctx := context.Background()
	env := newTestEnv(t, 1)
	cfg := env.config()
	cfg.StallTimeout = 300 * time.Millisecond
	a, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer a.client.Close()
	defer a.db.Close()
	if _, err := store.Migrate(ctx, a.db); err != nil {
		t.Fatal(err)
	}
	codecs := env.codecs
	offset := int64(0)
	batch := func() kgo.Fetches {
		v, err := codecs.Comparison.Encode(nil, schemas.Comparison{RequestID: fmt.Sprint("r", offset), Experiment: "exp", EventTime: time.Now(), Status: schemas.StatusComplete})
		if err != nil {
			t.Fatal(err)
		}
		r := &kgo.Record{Topic: schemas.TopicComparisons, Partition: 0, Offset: offset, Key: []byte(fmt.Sprint("r", offset)), Value: v}
		offset++
		return kgo.Fetches{{Topics: []kgo.FetchTopic{{Topic: r.Topic, Partitions: []kgo.FetchPartition{{Partition: 0, Records: []*kgo.Record{r}}}}}}}
	}
	// The other replica: it has already stored offsets far ahead of anything handed to us.
	if _, err := a.store.Apply(ctx, store.Batch{Offsets: []store.Offset{{Topic: schemas.TopicComparisons, Partition: 0, First: 0, Next: 1 << 40}}}); err != nil {
		t.Fatal(err)
	}
	if err := a.handle(ctx, batch()); err != nil {
		t.Fatalf("a first refusal (a rebalance) must not stop the aggregator: %v", err)
	}
	if failing := a.ops.Ready(ctx); failing["fencing"] != "" {
		t.Fatalf("unready after one refusal: %v", failing)
	}
	if err := a.handle(ctx, batch()); err != nil {
		t.Fatal(err)
	}
	if failing := a.ops.Ready(ctx); failing["fencing"] == "" {
		t.Fatalf("ready while every batch is refused: %v", failing)
	}
	time.Sleep(2 * cfg.StallTimeout)
	if err := a.handle(ctx, batch()); !errors.Is(err, ErrFencedOut) {
		t.Fatalf("fenced for longer than the stall timeout: %v, want ErrFencedOut", err)
	}
}
