package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

// TestJoinerSIGKILLExactlyOnce kills the joiner process with SIGKILL three times while it joins
// 10,000 champion events with 10,000 shadow results: read with read_committed, every request
// must have exactly one comparison, and it must be complete (state restored from the
// changelog, never re-emitted or lost).
func TestJoinerSIGKILLExactlyOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	experiment := fmt.Sprintf("joinkill-%d", time.Now().UnixNano())
	const n = 10000
	codecs, _ := schemas.NewCodecs()
	cl := newClient(t, kgo.ProducerLinger(5*time.Millisecond))
	now := time.Now()
	for i := range n {
		id := fmt.Sprintf("%s-%06d", experiment, i)
		ev, _ := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id, Experiment: experiment, EventTime: now,
			Model: schemas.ModelRef{Name: "m"}, Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.5)},
		})
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte(id), Value: ev}, nil)
		// Shadow results trail their events, as in production.
		if i >= 500 {
			prev := fmt.Sprintf("%s-%06d", experiment, i-500)
			res, _ := codecs.Shadow.Encode(nil, schemas.ShadowResult{
				RequestID: prev, Experiment: experiment, Shadow: "a", EventTime: now,
				Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.6)},
			})
			cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicShadow, Key: []byte(prev), Value: res}, nil)
		}
	}
	for i := n - 500; i < n; i++ {
		id := fmt.Sprintf("%s-%06d", experiment, i)
		res, _ := codecs.Shadow.Encode(nil, schemas.ShadowResult{
			RequestID: id, Experiment: experiment, Shadow: "a", EventTime: now,
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.6)},
		})
		cl.Produce(ctx, &kgo.Record{Topic: schemas.TopicShadow, Key: []byte(id), Value: res}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	bin := filepath.Join(dir, "joiner")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	build.Dir = filepath.Join(repoRoot(t), "services", "joiner")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build joiner: %v\n%s", err, out)
	}
	logPath := filepath.Join(dir, "joiner.log")
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "--kafka.brokers="+broker.Brokers, "--http.listen-addr=127.0.0.1:0", "--instance-id="+experiment,
			"--kafka.group="+experiment, "--join.expected-shadows=a", "--join.window=5m", "--batch.max-records=100", "--database.url="+postgres.URL)
		logf, _ := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	// Kill when 20 %, 45 % and 70 % of the comparisons are visible, so that every kill lands
	// in the middle of the work, with joins pending in the changelog.
	watch := newClient(t, kgo.ConsumeTopics(schemas.TopicComparisons), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	seen := 0
	cmd := start()
	for i, frac := range []float64{0.2, 0.45, 0.7} {
		for seen < int(frac*n) {
			pctx, c := context.WithTimeout(ctx, time.Second)
			fs := watch.PollFetches(pctx)
			c()
			if ctx.Err() != nil {
				t.Fatalf("only %d comparisons before kill %d", seen, i+1)
			}
			fs.EachRecord(func(r *kgo.Record) {
				if cmp, err := codecs.Comparison.Decode(ctx, r.Value); err == nil && cmp.Experiment == experiment {
					seen++
				}
			})
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("SIGKILL %d sent after %d comparisons", i+1, seen)
		cmd = start()
	}
	counts := map[string]int{}
	statuses := map[string]int{}
	rc := newClient(t, kgo.ConsumeTopics(schemas.TopicComparisons), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	deadline := time.Now().Add(3 * time.Minute)
	quietSince := time.Now()
	for time.Now().Before(deadline) && (len(counts) < n || time.Since(quietSince) < 3*time.Second) {
		pctx, c := context.WithTimeout(ctx, 500*time.Millisecond)
		fs := rc.PollFetches(pctx)
		c()
		fs.EachRecord(func(r *kgo.Record) {
			cmp, err := codecs.Comparison.Decode(ctx, r.Value)
			if err != nil || cmp.Experiment != experiment {
				return
			}
			counts[cmp.RequestID]++
			statuses[cmp.Status]++
			quietSince = time.Now()
		})
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	if len(counts) != n {
		log, _ := os.ReadFile(logPath)
		t.Fatalf("%d requests have comparisons, want %d (statuses %v)\njoiner log tail:\n%s", len(counts), n, statuses, tail(string(log), 3000))
	}
	for id, c := range counts {
		if c != 1 {
			t.Fatalf("%s has %d comparisons", id, c)
		}
	}
	if statuses[schemas.StatusComplete] != n {
		t.Fatalf("statuses %v, want %d complete", statuses, n)
	}
}
