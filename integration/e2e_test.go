package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	aggregator "github.com/understudy-ml/understudy/services/aggregator/app"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	invoker "github.com/understudy-ml/understudy/services/invoker/app"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
	"github.com/understudy-ml/understudy/services/understudy/demo"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
)

const requests = 1000

// TestEndToEnd sends 1,000 requests through the tap in front of a real champion, with the
// real Apache Kafka broker and real Postgres, and checks that every caller got exactly the
// champion's bytes and that exactly 1,000 comparisons (no more, no fewer) reach Postgres.
func TestEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	experiment := fmt.Sprintf("e2e-%d", time.Now().UnixNano())

	ensureTopics(ctx, t)
	champion, candidate := demo.Champion(), demo.Candidate()
	championURL := serve(t, champion)
	candidateURL := serve(t, candidate)
	p := startPipeline(ctx, t, pipeline.Options{
		Brokers: broker.Brokers, DatabaseURL: postgres.URL, Experiment: experiment,
		ChampionURL: championURL, ShadowURL: candidateURL, JoinWindow: 30 * time.Second,
	})

	res := demo.Traffic(ctx, p.ProxyURL, champion.Name, freshSeed(), requests, 0, 32, champion, nil)
	if res.Sent != requests || res.OK != requests || res.Mismatched != 0 || res.Failed != 0 {
		t.Fatalf("traffic: %+v; every caller must get the champion's exact answer", res)
	}

	db, err := pgxpool.New(ctx, postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Wait for the 1,000th comparison in Postgres, read the whole comparisons topic, then wait
	// until the aggregator's stored offsets are past its last record, so that a late duplicate
	// would have been counted by now.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		counts, err := store.Counts(ctx, db, experiment)
		if err != nil {
			t.Fatal(err)
		}
		if sum(counts) >= requests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes Postgres has %v comparisons for %d requests", counts, requests)
		}
		time.Sleep(200 * time.Millisecond)
	}
	ids, last := readComparisonIDs(ctx, t, experiment)
	for !caughtUp(ctx, t, db, aggregator.NewDefaultConfig().Group, last) {
		if time.Now().After(deadline) {
			t.Fatal("the aggregator never consumed the whole comparisons topic")
		}
		time.Sleep(200 * time.Millisecond)
	}
	counts, err := store.Counts(ctx, db, experiment)
	if err != nil {
		t.Fatal(err)
	}
	if sum(counts) != requests || counts[schemas.StatusComplete] != requests {
		t.Fatalf("Postgres counts %v, want exactly %d complete comparisons; invoker calls by outcome %v", counts, requests,
			counters(t, p.Registries["invoker"], "understudy_invoker_calls_total", "outcome"))
	}
	if len(ids) != requests {
		t.Fatalf("%d distinct request ids in the comparisons topic, want %d", len(ids), requests)
	}
	for id, n := range ids {
		if n != 1 {
			t.Fatalf("request %s has %d comparisons, want 1", id, n)
		}
	}
}

// freshSeed returns a traffic seed no earlier run has used. Request ids derive from the seed,
// and the joiner rightly drops a request id it has already joined as a duplicate, so a test
// that runs twice against the same broker (go test -count=2) must not repeat its ids.
func freshSeed() uint64 { return uint64(time.Now().UnixNano()) }

func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// startPipeline starts the four services in-process, their Kafka consumer groups at the end of
// their inputs, and waits until every one is ready; the
// pipeline is stopped when the test ends (stopping it earlier is fine), and a service that
// stopped with an error fails the test.
func startPipeline(ctx context.Context, t *testing.T, o pipeline.Options) *pipeline.Pipeline {
	t.Helper()
	// Start the default consumer groups at the end of their inputs: earlier tests' records are
	// a backlog for these groups, and under -race they would take minutes to work through.
	startAtEnd(ctx, t, joiner.NewDefaultConfig().Group)
	group := invoker.NewDefaultConfig().Group
	startAtEnd(ctx, t, group)
	shadows := []string{o.ShadowName}
	if o.ShadowName == "" {
		shadows[0] = "candidate"
	}
	for _, s := range o.Shadows {
		shadows = append(shadows, s.Name)
	}
	for _, s := range shadows {
		startAtEnd(ctx, t, invoker.LaneGroup(group, o.Experiment, s))
	}
	p, err := pipeline.Start(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("pipeline stopped with error: %v", err)
		}
	})
	waitReady(t, ctx, p)
	return p
}

// waitReady polls every service's /readyz until all answer 200.
func waitReady(t *testing.T, ctx context.Context, p *pipeline.Pipeline) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for name, base := range p.OpsURLs {
		for {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				_ = resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready after 60s: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// caughtUp reports whether the stored offsets of an aggregator group are past the last comparison record
// of every partition (last holds those records' offsets).
func caughtUp(ctx context.Context, t *testing.T, db *pgxpool.Pool, group string, last map[int32]int64) bool {
	t.Helper()
	stored, err := store.StoredOffsets(ctx, db, group)
	if err != nil {
		t.Fatal(err)
	}
	for p, off := range last {
		if stored[schemas.TopicComparisons][p] <= off {
			return false
		}
	}
	return true
}

// readComparisonIDs reads the comparisons topic to its end (read_committed) and returns how
// many comparisons each request id of experiment has, and the last data record's offset of
// every partition. Transaction markers are kept so that the end is seen even when it is one.
func readComparisonIDs(ctx context.Context, t *testing.T, experiment string) (map[string]int, map[int32]int64) {
	t.Helper()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(broker.Brokers, ",")...), kgo.ConsumeTopics(schemas.TopicComparisons),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	last := map[int32]int64{}
	ends, err := adm.ListEndOffsets(ctx, schemas.TopicComparisons)
	if err != nil {
		t.Fatal(err)
	}
	remaining := map[int32]int64{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			remaining[o.Partition] = o.Offset
		}
	})
	ids := map[string]int{}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for len(remaining) > 0 {
		fs := cl.PollFetches(rctx)
		if err := rctx.Err(); err != nil {
			t.Fatalf("reading comparisons: %v (partitions left %v)", err, remaining)
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset+1 >= remaining[r.Partition] {
				delete(remaining, r.Partition)
			}
			if r.Attrs.IsControl() {
				return
			}
			last[r.Partition] = r.Offset
			c, err := codecs.Comparison.Decode(ctx, r.Value)
			if err != nil {
				t.Errorf("undecodable comparison at %d@%d: %v", r.Partition, r.Offset, err)
				return
			}
			if c.Experiment == experiment {
				ids[c.RequestID]++
			}
		})
	}
	return ids, last
}

func sum(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}
