package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	invoker "github.com/understudy-ml/understudy/services/invoker/app"
	"github.com/understudy-ml/understudy/services/platform/topics"
)

func ensureTopics(ctx context.Context, t *testing.T) {
	t.Helper()
	tc := topics.NewDefaultConfig()
	tc.Partitions = 4
	if _, err := topics.Ensure(ctx, newClient(t), tc, topics.Understudy(tc)); err != nil {
		t.Fatal(err)
	}
}

// produceEvents writes n inference events of experiment with ids <prefix>-<i>.
func produceEvents(ctx context.Context, t *testing.T, experiment, prefix string, n int, pace time.Duration) {
	t.Helper()
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	cl := newClient(t, kgo.DefaultProduceTopic(schemas.TopicInference), kgo.ProducerLinger(5*time.Millisecond))
	for i := range n {
		id := fmt.Sprintf("%s-%06d", prefix, i)
		v, err := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id, Experiment: experiment, EventTime: time.Now(),
			Request: schemas.HTTPRequest{Method: "POST", Path: "/v2/models/m/infer", Body: []byte(`{"inputs":[]}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		cl.Produce(ctx, &kgo.Record{Key: []byte(id), Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
		if pace > 0 {
			time.Sleep(pace)
		}
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

type resultKey struct{ id, shadow string }

// readResults reads the shadow topic with read_committed until want results of experiment
// arrived and the topic stays quiet for quiet, and returns every result's kind and count.
func readResults(ctx context.Context, t *testing.T, experiment string, want int, quiet time.Duration) (map[resultKey]string, map[resultKey]int) {
	t.Helper()
	codecs, _ := schemas.NewCodecs()
	cl := newClient(t, kgo.ConsumeTopics(schemas.TopicShadow), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	kinds, counts := map[resultKey]string{}, map[resultKey]int{}
	total := 0
	lastNew := time.Now()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) && (total < want || time.Since(lastNew) < quiet) {
		pctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			res, err := codecs.Shadow.Decode(ctx, r.Value)
			if err != nil || res.Experiment != experiment {
				return
			}
			k := resultKey{res.RequestID, res.Shadow}
			counts[k]++
			kinds[k] = "ok"
			if res.Error != nil {
				kinds[k] = res.Error.Kind
			}
			total++
			lastNew = time.Now()
		})
	}
	return kinds, counts
}

// TestInvokerBudgetsAndFailures runs the invoker on the real broker with five shadows: two
// healthy ones with different budgets, one that times out, one that answers garbage and one
// whose failures open its circuit until it recovers.
func TestInvokerBudgetsAndFailures(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	ok := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
	}))
	slow := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { time.Sleep(time.Second) }))
	garbage := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("<html>")) }))
	// flaky fails for its first second of traffic (well over 5 consecutive failures, whatever
	// the order in which concurrent calls complete), then recovers.
	var failUntil atomic.Int64
	flaky := serve(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		now := time.Now().UnixNano()
		failUntil.CompareAndSwap(0, now+int64(time.Second))
		if now < failUntil.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		_, _ = w.Write([]byte(`{"outputs":[{"data":[1]}]}`))
	}))
	experiment := fmt.Sprintf("budgets-%d", time.Now().UnixNano())
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	writeFile(t, file, fmt.Sprintf(`experiments:
  - name: %s
    shadows:
      - {name: wide, url: %s, max_in_flight: 32}
      - {name: narrow, url: %s, max_in_flight: 1, rate_limit: 20, burst: 5}
      - {name: slow, url: %s, timeout: 100ms}
      - {name: garbage, url: %s}
      - {name: flaky, url: %s, circuit: {failures: 5, cooldown: 1s}}
`, experiment, ok, ok, slow, garbage, flaky))
	cfg := invoker.NewDefaultConfig()
	cfg.Kafka.Brokers = broker.Brokers
	cfg.Ops.ListenAddr = "127.0.0.1:0"
	cfg.ExperimentsFile = file
	cfg.InstanceID = experiment
	cfg.Group = experiment
	cfg.MaxBatch = 20
	startLanesAtEnd(ctx, t, cfg.Group, experiment, "wide", "narrow", "slow", "garbage", "flaky")
	inv, err := invoker.New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- inv.Run(rctx) }()
	const n = 300
	produceEvents(ctx, t, experiment, "b", n, 10*time.Millisecond) // about 3 s, longer than the cooldown
	kinds, counts := readResults(ctx, t, experiment, 5*n, 2*time.Second)
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for k, c := range counts {
		if c != 1 {
			t.Fatalf("%v has %d results", k, c)
		}
	}
	byShadow := map[string]map[string]int{}
	for k, kind := range kinds {
		if byShadow[k.shadow] == nil {
			byShadow[k.shadow] = map[string]int{}
		}
		byShadow[k.shadow][kind]++
	}
	t.Logf("results by shadow and kind: %v", byShadow)
	for _, s := range []string{"wide", "narrow", "slow", "garbage", "flaky"} {
		total := 0
		for _, c := range byShadow[s] {
			total += c
		}
		if total != n {
			t.Errorf("shadow %s: %d results, want %d", s, total, n)
		}
	}
	switch {
	case byShadow["wide"]["ok"] != n:
		t.Errorf("wide: %v", byShadow["wide"])
	case byShadow["narrow"]["rate_limited"] == 0 || byShadow["narrow"]["ok"] == 0:
		t.Errorf("narrow should be partly rate limited: %v", byShadow["narrow"])
	case byShadow["slow"]["timeout"] == 0 || byShadow["slow"]["timeout"]+byShadow["slow"]["circuit_open"] != n:
		t.Errorf("slow: %v", byShadow["slow"])
	case byShadow["garbage"]["bad_response"] != n:
		t.Errorf("garbage: %v", byShadow["garbage"])
	case byShadow["flaky"]["http_status"] < 5 || byShadow["flaky"]["circuit_open"] == 0 || byShadow["flaky"]["ok"] == 0:
		t.Errorf("flaky should fail, open its circuit, then close it: %v", byShadow["flaky"])
	}
}

// TestInvokerSIGKILLExactlyOnce kills the invoker process with SIGKILL three times while it
// works through 20,000 events: read with read_committed, every (request, shadow) must have
// exactly one result.
func TestInvokerSIGKILLExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	shadowURL := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
	}))
	experiment := fmt.Sprintf("sigkill-%d", time.Now().UnixNano())
	dir := t.TempDir()
	file := filepath.Join(dir, "experiments.yaml")
	writeFile(t, file, fmt.Sprintf("experiments:\n  - name: %s\n    shadows:\n      - {name: a, url: %s}\n      - {name: b, url: %s}\n", experiment, shadowURL, shadowURL))
	bin, err := harness.BuildService(ctx, "invoker", dir)
	if err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--kafka.brokers="+broker.Brokers, "--http.listen-addr=127.0.0.1:0", "--experiments.file="+file,
			"--instance-id="+experiment, "--kafka.group="+experiment, "--batch.max-events=500")
		logf, _ := os.OpenFile(filepath.Join(dir, "invoker.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	const n = 20000
	startLanesAtEnd(ctx, t, experiment, experiment, "a", "b")
	produceEvents(ctx, t, experiment, "k", n, 0)
	cmd := start()
	for i := range 3 {
		time.Sleep(time.Duration(1500+700*i) * time.Millisecond)
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("SIGKILL %d sent", i+1)
		cmd = start()
	}
	kinds, counts := readResults(ctx, t, experiment, 2*n, 3*time.Second)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if len(counts) != 2*n {
		log, _ := os.ReadFile(filepath.Join(dir, "invoker.log"))
		t.Fatalf("%d distinct (request, shadow) results, want %d\ninvoker log tail:\n%s", len(counts), 2*n, tail(string(log), 2000))
	}
	dups := 0
	for k, c := range counts {
		if c != 1 {
			dups++
			if dups < 5 {
				t.Errorf("%v has %d results", k, c)
			}
		}
		if kinds[k] != "ok" {
			t.Errorf("%v: %s", k, kinds[k])
		}
	}
	if dups > 0 {
		t.Fatalf("%d (request, shadow) pairs with more than one committed result", dups)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startLanesAtEnd starts an invoker's intake group and the lane groups of shadows of
// experiment at the end of their inputs: earlier tests' events are a backlog every lane would
// read first, and under -race that takes minutes.
func startLanesAtEnd(ctx context.Context, t *testing.T, group, experiment string, shadows ...string) {
	t.Helper()
	startAtEnd(ctx, t, group)
	for _, s := range shadows {
		startAtEnd(ctx, t, invoker.LaneGroup(group, experiment, s))
	}
}
