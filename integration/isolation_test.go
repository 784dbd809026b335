package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/schemas"
)

// TestSlowShadowDoesNotHoldBackAnother runs two shadows of one experiment on the real broker:
// one answers in 1.5 s (inside its timeout), the other at once. The fast shadow answers every
// request (coverage 100 %) and its committed results are readable within 1 s p99 of the
// champion event; the slow one still answers every request, exactly once.
func TestSlowShadowDoesNotHoldBackAnother(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	answer := func(delay time.Duration) string {
		return serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			time.Sleep(delay)
			_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
		}))
	}
	experiment := fmt.Sprintf("isolation-%d", time.Now().UnixNano())
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	writeFile(t, file, fmt.Sprintf("experiments:\n  - name: %s\n    shadows:\n      - {name: slow, url: %s, timeout: 3s, max_in_flight: 256}\n      - {name: fast, url: %s}\n",
		experiment, answer(1500*time.Millisecond), answer(0)))
	// The invoker runs as its own binary (built like production, without the race detector
	// that instruments this test process), so the visibility measured is the service's.
	dir := t.TempDir()
	bin, err := harness.BuildService(ctx, "invoker", dir)
	if err != nil {
		t.Fatal(err)
	}
	startLanesAtEnd(ctx, t, experiment, experiment, "slow", "fast")
	cmd := exec.Command(bin, "--kafka.brokers="+broker.Brokers, "--http.listen-addr=127.0.0.1:0", "--experiments.file="+file,
		"--instance-id="+experiment, "--kafka.group="+experiment)
	logf, err := os.Create(filepath.Join(dir, "invoker.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if err := cmd.Wait(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "invoker.log"))
			t.Errorf("invoker: %v\n%s", err, tail(string(log), 2000))
		}
	}()

	// Read committed results as they become visible, noting when.
	codecs, _ := schemas.NewCodecs()
	ends, err := kadm.NewClient(newClient(t)).ListEndOffsets(ctx, schemas.TopicShadow)
	if err != nil {
		t.Fatal(err)
	}
	from := map[string]map[int32]kgo.Offset{schemas.TopicShadow: {}}
	ends.Each(func(o kadm.ListedOffset) { from[o.Topic][o.Partition] = kgo.NewOffset().At(o.Offset) })
	cl := newClient(t, kgo.ConsumePartitions(from), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	counts := map[resultKey]int{}
	var visibleAfter []time.Duration
	measuring := false
	read := func(until func() bool, within time.Duration) {
		deadline := time.Now().Add(within)
		for !until() && time.Now().Before(deadline) {
			fs := cl.PollFetches(pollCtx(ctx, 200*time.Millisecond))
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				res, err := codecs.Shadow.Decode(ctx, r.Value)
				if err != nil || res.Experiment != experiment || (measuring && strings.HasPrefix(res.RequestID, "warm")) {
					return
				}
				k := resultKey{res.RequestID, res.Shadow}
				counts[k]++
				if res.Shadow == "fast" && counts[k] == 1 {
					if res.Error != nil {
						t.Errorf("fast shadow %s: %s", res.RequestID, res.Error.Kind)
					}
					visibleAfter = append(visibleAfter, now.Sub(res.EventTime))
				}
			})
		}
	}
	// Warm up: both lanes have joined their groups once a first request has a result from
	// each (a new group's first join waits for the broker's initial rebalance delay).
	warm := 0
	read(func() bool {
		warm++
		produceEvents(ctx, t, experiment, fmt.Sprintf("warm%d", warm), 1, 0)
		return len(visibleAfter) > 0 && len(counts) > len(visibleAfter)
	}, time.Minute)
	if len(visibleAfter) == 0 {
		t.Fatal("no result from the fast shadow within a minute")
	}
	read(func() bool { return len(counts) == 2*warm }, 30*time.Second)
	visibleAfter, counts, measuring = nil, map[resultKey]int{}, true
	const n = 1000
	fastDone := make(chan struct{})
	go func() {
		defer close(fastDone)
		read(func() bool { return len(visibleAfter) == n }, 90*time.Second)
	}()
	produceEvents(ctx, t, experiment, "iso", n, 10*time.Millisecond) // 10 s at 100 requests/s
	<-fastDone
	if len(visibleAfter) != n {
		t.Fatalf("fast shadow answered %d of %d requests", len(visibleAfter), n)
	}
	slices.Sort(visibleAfter)
	p50, p99 := visibleAfter[n/2], visibleAfter[n*99/100]
	t.Logf("fast shadow: %d/%d results, visible p50 %s, p99 %s after the champion event", len(visibleAfter), n, p50, p99)
	if p99 > time.Second {
		t.Errorf("fast shadow's results visible %s p99 after the champion event, want ≤ 1s", p99)
	}
	slow := func() (c int) {
		for k := range counts {
			if k.shadow == "slow" {
				c++
			}
		}
		return c
	}
	read(func() bool { return slow() == n }, 90*time.Second)
	if slow() != n {
		t.Fatalf("slow shadow answered %d of %d requests", slow(), n)
	}
	for k, c := range counts {
		if c != 1 {
			t.Fatalf("%v has %d results", k, c)
		}
	}
}

func pollCtx(ctx context.Context, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(ctx, d)
	time.AfterFunc(d, cancel)
	return c
}
