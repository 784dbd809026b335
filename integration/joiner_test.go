package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/topics"
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

	start, logPath := joinerProcess(ctx, t, broker.Brokers, experiment, "--join.window=5m", "--batch.max-records=100")
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
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s has %d comparisons\njoiner log tail:\n%s", id, c, tail(string(log), 6000))
		}
	}
	if statuses[schemas.StatusComplete] != n {
		t.Fatalf("statuses %v, want %d complete", statuses, n)
	}
}

// TestJoinerFaultsWithLabels is the joiner's fault test: 100,000 requests with one shadow,
// 80,000 of them labeled (10,000 labels before their predictions, the rest while the joiner
// works); the joiner process is SIGKILLed at 20 %, 45 % and 70 % of the expected output and
// the broker is hard-killed and restarted at 55 %. Read with read_committed afterwards, every
// request has exactly one final comparison and every labeled request exactly one labeled
// comparison: none lost, none doubled.
func TestJoinerFaultsWithLabels(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	broker := killableBroker(t)
	client := func(opts ...kgo.Opt) *kgo.Client { return clientFor(t, broker.Brokers, opts...) }
	tc := topics.NewDefaultConfig()
	tc.Partitions = 4
	if _, err := topics.Ensure(ctx, client(), tc, topics.Understudy(tc)); err != nil {
		t.Fatal(err)
	}
	exp := fmt.Sprintf("faults-%d", time.Now().UnixNano())
	const n = 100000
	codecs, _ := schemas.NewCodecs()
	prod := client(kgo.ProducerLinger(5*time.Millisecond), kgo.MaxBufferedRecords(50000))
	// Requests an hour old, labels from now: labels come an hour after their requests, and no
	// event time lies ahead of the joiner's clock (such records are dead-lettered).
	now := time.Now().UTC().Add(-time.Hour)
	id := func(i int) string { return fmt.Sprintf("%s-%06d", exp, i) }
	labeled := func(i int) bool { return i%5 != 0 }
	early := func(i int) bool { return i%10 == 1 }
	var perr error
	cb := func(_ *kgo.Record, err error) {
		if err != nil && perr == nil {
			perr = err
		}
	}
	label := func(i int) {
		v, _ := codecs.Label.Encode(nil, schemas.LabelEvent{RequestID: id(i), Experiment: exp, Value: schemas.Number(float64(i % 2)), EventTime: now.Add(time.Hour), Source: "test"})
		prod.Produce(ctx, &kgo.Record{Topic: schemas.TopicLabels, Key: []byte(id(i)), Value: v}, cb)
	}
	for i := range n {
		if labeled(i) && early(i) {
			label(i)
		}
	}
	for i := range n {
		ev, _ := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id(i), Experiment: exp, EventTime: now, Model: schemas.ModelRef{Name: "m"},
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.5)},
		})
		res, _ := codecs.Shadow.Encode(nil, schemas.ShadowResult{
			RequestID: id(i), Experiment: exp, Shadow: "a", EventTime: now,
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.6)},
		})
		prod.Produce(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte(id(i)), Value: ev}, cb)
		prod.Produce(ctx, &kgo.Record{Topic: schemas.TopicShadow, Key: []byte(id(i)), Value: res}, cb)
	}
	if err := prod.Flush(ctx); err != nil || perr != nil {
		t.Fatal(err, perr)
	}
	wantLabeled := 0
	for i := range n {
		if labeled(i) {
			wantLabeled++
		}
	}
	total := n + wantLabeled

	start, logPath := joinerProcess(ctx, t, broker.Brokers, exp)
	finals, labels := map[string]int{}, map[string]int{}
	reader := client(kgo.ConsumeTopics(schemas.TopicComparisons), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	read := func(d time.Duration) {
		pctx, c := context.WithTimeout(ctx, d)
		defer c()
		reader.PollFetches(pctx).EachRecord(func(r *kgo.Record) {
			cmp, err := codecs.Comparison.Decode(ctx, r.Value)
			if err != nil || cmp.Experiment != exp {
				return
			}
			if cmp.Label != nil {
				labels[cmp.RequestID]++
			} else {
				finals[cmp.RequestID]++
			}
		})
	}
	seen := func() int { return len(finals) + len(labels) }
	waitFor := func(frac float64, what string) {
		for seen() < int(frac*float64(total)) {
			if ctx.Err() != nil {
				log, _ := os.ReadFile(logPath)
				t.Fatalf("only %d of %d comparisons before %s\njoiner log tail:\n%s", seen(), total, what, tail(string(log), 3000))
			}
			read(time.Second)
		}
	}
	kill := func(cmd *exec.Cmd, what string) {
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		t.Logf("SIGKILL %s after %d comparisons", what, seen())
	}

	cmd := start()
	waitFor(0.2, "kill 1")
	kill(cmd, "1")
	for i := range n { // the labels that come after their predictions
		if labeled(i) && !early(i) {
			label(i)
		}
	}
	if err := prod.Flush(ctx); err != nil || perr != nil {
		t.Fatal(err, perr)
	}
	cmd = start()
	waitFor(0.45, "kill 2")
	kill(cmd, "2")
	cmd = start()
	waitFor(0.55, "the broker restart")
	if err := broker.Kill(); err != nil {
		t.Fatal(err)
	}
	t.Logf("broker killed after %d comparisons", seen())
	if err := broker.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(0.7, "kill 3")
	kill(cmd, "3")
	cmd = start()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()
	waitFor(1, "the end")
	read(3 * time.Second) // duplicates, if any, would come now
	for i := range n {
		if c := finals[id(i)]; c != 1 {
			t.Fatalf("%s has %d final comparisons", id(i), c)
		}
		want := 0
		if labeled(i) {
			want = 1
		}
		if c := labels[id(i)]; c != want {
			t.Fatalf("%s has %d labeled comparisons, want %d", id(i), c, want)
		}
	}
	if len(finals) != n || len(labels) != wantLabeled {
		t.Fatalf("%d final and %d labeled comparisons, want %d and %d", len(finals), len(labels), n, wantLabeled)
	}
	log, _ := os.ReadFile(logPath)
	t.Logf("joiner log: %d Kafka session replacements, %d label-state catch-ups",
		strings.Count(string(log), "kafka session failed"), strings.Count(string(log), "label state caught up"))
}

// joinerProcess builds the joiner binary and returns a function that starts it (group and
// instance id named after experiment, shadow "a" expected, this package's Postgres, extra
// flags appended) with its output appended to the returned log file.
func joinerProcess(ctx context.Context, t *testing.T, brokers, experiment string, flags ...string) (start func(extra ...string) *exec.Cmd, logPath string) {
	t.Helper()
	return serviceProcess(ctx, t, "joiner", append([]string{
		"--kafka.brokers=" + brokers, "--http.listen-addr=127.0.0.1:0", "--instance-id=" + experiment,
		"--kafka.group=" + experiment, "--join.expected-shadows=a", "--database.url=" + postgres.URL,
	}, flags...)...)
}

// serviceProcess builds service name and returns a function that starts it with args and the
// start's extra arguments (each start a new process, its output appended to logPath).
func serviceProcess(ctx context.Context, t *testing.T, name string, args ...string) (start func(extra ...string) *exec.Cmd, logPath string) {
	t.Helper()
	dir := t.TempDir()
	bin, err := harness.BuildService(ctx, name, dir)
	if err != nil {
		t.Fatal(err)
	}
	logPath = filepath.Join(dir, name+".log")
	return func(extra ...string) *exec.Cmd {
		cmd := exec.Command(bin, append(append([]string(nil), args...), extra...)...)
		logf, _ := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}, logPath
}

// killableBroker returns the package's broker when the harness started it, else a private
// one (KAFKA_BROKERS points at a broker that is not ours to kill), stopped after the test.
func killableBroker(t *testing.T) *harness.Kafka {
	t.Helper()
	if broker.Owned() {
		return broker
	}
	own, err := harness.StartOwnKafka()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = own.Stop() })
	return own
}
