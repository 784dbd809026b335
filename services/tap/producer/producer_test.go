package producer

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestSpoolsWhileKafkaIsAwayAndDeliversLater publishes while no broker listens, then starts
// one on the same address: every event must arrive, none twice.
func TestSpoolsWhileKafkaIsAwayAndDeliversLater(t *testing.T) {
	port := freePort(t)
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = "127.0.0.1:" + strconv.Itoa(port)
	cfg.Kafka.DialTimeout = 200 * time.Millisecond
	cfg.DeliveryTimeout = time.Second
	cfg.SpoolDir = t.TempDir()
	p, err := New(cfg, codecs.Inference, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	const n = 200
	start := time.Now()
	for i := range n {
		if err := p.Publish(schemas.InferenceEvent{RequestID: fmt.Sprint("r", i), Experiment: "e"}); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing %d events with Kafka away took %s: Publish must not block", n, d)
	}
	waitFor(t, func() bool { return testutil.ToFloat64(p.spooled) == n }, "events spooled")

	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(port), kfake.SeedTopics(3, schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	waitFor(t, func() bool { return testutil.ToFloat64(p.replayed) == n && p.spool.Bytes() == 0 }, "spool replayed")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if err := p.Close(cctx); err != nil {
		t.Fatal(err)
	}
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	seen := map[string]int{}
	for len(seen) < n {
		fs := consumer.PollFetches(cctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("consumed %d distinct events: %v", len(seen), err)
		}
		fs.EachRecord(func(r *kgo.Record) { seen[string(r.Key)]++ })
	}
	for k, c := range seen {
		if c != 1 {
			t.Fatalf("%s delivered %d times", k, c)
		}
	}
}

func TestWithoutSpoolDropsAreCounted(t *testing.T) {
	codecs, _ := schemas.NewCodecs()
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = "127.0.0.1:" + strconv.Itoa(freePort(t))
	cfg.BufferRecords = 10
	cfg.DeliveryTimeout = time.Second
	p, err := New(cfg, codecs.Inference, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		_ = p.Publish(schemas.InferenceEvent{RequestID: fmt.Sprint("r", i)})
	}
	waitFor(t, func() bool {
		return testutil.ToFloat64(p.notCaptured.WithLabelValues(ReasonBufferFull)) == 20 &&
			testutil.ToFloat64(p.notCaptured.WithLabelValues(ReasonKafkaUnavailable)) == 10
	}, "20 buffer_full and 10 kafka_unavailable")
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.Close(ctx)
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
