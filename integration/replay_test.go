package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/invoker/replay"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/kafka"
)

type nopObserver struct{}

func (nopObserver) Called(string, string, time.Duration) {}
func (nopObserver) InFlight(string, int)                 {}
func (nopObserver) Circuit(string, bool)                 {}

// TestReplayWindowIntoNewShadow records 300 events 10 ms apart (record timestamps equal to event
// times, increasing like a real log's), replays the middle second into a new shadow, interrupts
// the replay after its first batch and resumes it: exactly the 100 events of the window get
// one result each, tagged with the run id.
func TestReplayWindowIntoNewShadow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	experimentName := fmt.Sprintf("replay-%d", time.Now().UnixNano())
	base := time.Now().Truncate(time.Millisecond)
	codecs, _ := schemas.NewCodecs()
	cl := newClient(t, kgo.DefaultProduceTopic(schemas.TopicInference))
	inWindow := map[string]bool{}
	for i := range 300 {
		at := base.Add(time.Duration(i) * 10 * time.Millisecond)
		id := fmt.Sprintf("%s-%03d", experimentName, i)
		v, _ := codecs.Inference.Encode(nil, schemas.InferenceEvent{
			RequestID: id, Experiment: experimentName, EventTime: at,
			Request: schemas.HTTPRequest{Method: "POST", Path: "/v2/models/m/infer", Body: []byte(`{}`)},
		})
		if err := cl.ProduceSync(ctx, &kgo.Record{Key: []byte(id), Value: v, Timestamp: at}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if !at.Before(base.Add(time.Second)) && at.Before(base.Add(2*time.Second)) {
			inWindow[id] = true
		}
	}
	shadowURL := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
	}))
	kc := kafka.NewDefaultConfig("replay-test")
	kc.Brokers = broker.Brokers
	s := experiment.Shadow{Name: "v8", URL: shadowURL, MaxInFlight: 1}
	s.Defaults()
	opts := replay.Options{
		Kafka: kc, Experiment: experimentName, From: base.Add(time.Second), To: base.Add(2 * time.Second),
		Shadow: s, RunID: "run-" + experimentName, StateFile: filepath.Join(t.TempDir(), "state.json"), Batch: 25,
	}
	// First attempt: interrupted after its first acknowledged batch.
	ictx, interrupt := context.WithCancel(ctx)
	opts.Progress = func(read, total int64) { interrupt() }
	if _, err := replay.Run(ictx, opts, nopObserver{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: err = %v", err)
	}
	opts.Progress = nil
	sum, err := replay.Run(ctx, opts, nopObserver{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Outcomes["ok"] != int64(len(inWindow)) {
		t.Fatalf("summary %+v, want %d ok", sum, len(inWindow))
	}
	results := map[string]int{}
	rc := newClient(t, kgo.ConsumeTopics(schemas.TopicShadow), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	deadline := time.Now().Add(time.Minute)
	for len(results) < len(inWindow) && time.Now().Before(deadline) {
		pctx, c := context.WithTimeout(ctx, time.Second)
		fs := rc.PollFetches(pctx)
		c()
		fs.EachRecord(func(r *kgo.Record) {
			res, err := codecs.Shadow.Decode(ctx, r.Value)
			if err == nil && res.Experiment == experimentName {
				if res.RunID != opts.RunID || res.Shadow != "v8" || !inWindow[res.RequestID] {
					t.Errorf("unexpected result %s shadow %s run %q", res.RequestID, res.Shadow, res.RunID)
				}
				results[res.RequestID]++
			}
		})
	}
	if len(results) != len(inWindow) || len(inWindow) != 100 {
		t.Fatalf("%d results for %d events in the window (want 100)", len(results), len(inWindow))
	}
	for id, n := range results {
		if n != 1 {
			t.Errorf("%s replayed %d times", id, n)
		}
	}
}
