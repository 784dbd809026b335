package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/topics"
	tap "github.com/understudy-ml/understudy/services/tap/app"
	"github.com/understudy-ml/understudy/services/understudy/demo"
)

// TestTapSurvivesKafkaOutage hard-kills the real broker while requests flow through the tap:
// callers must not notice, events must be spooled, and after the broker restarts every event
// must be in the topic exactly once. It owns the broker for its duration.
func TestTapSurvivesKafkaOutage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	broker := killableBroker(t)
	kc := kafka.NewDefaultConfig("integration")
	kc.Brokers = broker.Brokers
	cl, err := kgo.NewClient(kc.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	tc := topics.NewDefaultConfig()
	tc.Partitions = 4
	if _, err := topics.Ensure(ctx, cl, tc, topics.Understudy(tc)); err != nil {
		t.Fatal(err)
	}
	champion := demo.Champion()
	cfg := tap.NewDefaultConfig()
	cfg.Kafka.Brokers = broker.Brokers
	cfg.Ops.ListenAddr, cfg.ListenAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.ChampionURL = serve(t, champion)
	cfg.Experiment = fmt.Sprintf("outage-%d", time.Now().UnixNano())
	cfg.Producer.SpoolDir = t.TempDir()
	cfg.Producer.DeliveryTimeout = 2 * time.Second
	reg := prometheus.NewRegistry()
	tp, err := tap.New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := tp.Listen()
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tp.Run(rctx) }()
	url := "http://" + addr.String() + "/v2/models/fraud/infer"

	var (
		mu     sync.Mutex
		sent   []string
		failed []string
	)
	send := func(phase string, n int) {
		client := &http.Client{Timeout: 5 * time.Second}
		for i := range n {
			r := demo.NewRequest(uint64(len(phase)), i)
			id := phase + "-" + r.ID
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(r.Body))
			req.Header.Set("X-Request-Id", id)
			start := time.Now()
			resp, err := client.Do(req)
			var body []byte
			if err == nil {
				body, err = io.ReadAll(resp.Body)
				_ = resp.Body.Close()
			}
			_, want := champion.Respond(r.Body)
			mu.Lock()
			sent = append(sent, id)
			if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, want) || time.Since(start) > time.Second {
				failed = append(failed, fmt.Sprintf("%s: err=%v slow=%s", id, err, time.Since(start)))
			}
			mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}
	send("before", 100)
	if err := broker.Kill(); err != nil {
		t.Fatal(err)
	}
	send("during", 400) // about 2-3 s without Kafka: events time out into the spool
	if err := broker.Restart(); err != nil {
		t.Fatal(err)
	}
	send("after", 100)
	if len(failed) > 0 {
		t.Fatalf("%d of %d callers noticed the outage, e.g. %s", len(failed), len(sent), failed[0])
	}

	got := readEventIDs(ctx, t, broker.Brokers, cfg.Experiment, len(sent))
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, id := range sent {
		if got[id] != 1 {
			t.Errorf("event %s delivered %d times", id, got[id])
		}
	}
	// The outage must really have exercised the spool, not only the in-memory buffer.
	if spooled := counter(t, reg, "understudy_events_spooled_total"); spooled == 0 {
		t.Fatal("no event went through the spool during the outage")
	} else {
		t.Logf("%d requests, %d events spooled during the outage and replayed", len(sent), int(spooled))
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// readEventIDs reads the inference topic until want events of experiment arrived (or a
// minute passed) and counts each request id.
func readEventIDs(ctx context.Context, t *testing.T, brokers, experiment string, want int) map[string]int {
	t.Helper()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	c, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(brokers, ",")...), kgo.ConsumeTopics(schemas.TopicInference), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := map[string]int{}
	total := 0
	deadline := time.Now().Add(90 * time.Second)
	for total < want && time.Now().Before(deadline) {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := c.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			ev, err := codecs.Inference.Decode(ctx, r.Value)
			if err != nil {
				t.Errorf("undecodable event: %v", err)
				return
			}
			if ev.Experiment == experiment {
				got[ev.RequestID]++
				total++
			}
		})
	}
	return got
}
