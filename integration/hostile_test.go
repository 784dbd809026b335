package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/understudy/demo"
	"github.com/understudy-ml/understudy/services/understudy/pipeline"
)

// recorder wraps a model server and remembers what reached it.
type recorder struct {
	h     http.Handler
	mu    sync.Mutex
	paths map[string]int
	auth  int
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.paths[req.Method+" "+req.URL.Path]++
	if req.Header.Get("Authorization") != "" || req.Header.Get("Cookie") != "" {
		r.auth++
	}
	r.mu.Unlock()
	r.h.ServeHTTP(w, req)
}

// TestHostileInputsNeverStopThePipeline sends, between two rounds of good traffic, what an
// attacker or a clumsy producer would: non-UTF-8 and oversized request ids through the tap;
// inference events with 3,000-byte, NUL, non-UTF-8 and 10 MB experiment names, dated 2100,
// aimed at management endpoints with credentials; shadow results, labels and comparisons with
// bad names, ids, statuses and latencies. Every service stays up and ready, both rounds of good
// traffic are joined and counted exactly once, every bad record is dead-lettered with its
// reason, no shadow gets a management call or a credential, and a restart changes nothing.
func TestHostileInputsNeverStopThePipeline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	experiment := fmt.Sprintf("hostile-%d", time.Now().UnixNano())
	ensureTopics(ctx, t)
	champion, candidate := demo.Champion(), demo.Candidate()
	shadow := &recorder{h: candidate, paths: map[string]int{}}
	opts := pipeline.Options{
		Brokers: broker.Brokers, DatabaseURL: postgres.URL, Experiment: experiment,
		ChampionURL: serve(t, champion), ShadowURL: serve(t, shadow), JoinWindow: 10 * time.Second,
	}
	p := startPipeline(ctx, t, opts)
	const good = 200
	if res := demo.Traffic(ctx, p.ProxyURL, champion.Name, freshSeed(), good, 0, 8, champion, nil); res.OK != good || res.Mismatched != 0 {
		t.Fatalf("first good round: %+v", res)
	}

	// Through the tap: ids that cannot be keys are proxied, not captured.
	for _, id := range []string{"bad-\xff\xfe", strings.Repeat("x", 300)} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.ProxyURL+"/v2/models/"+champion.Name+"/infer", strings.NewReader(string(demo.NewRequest(7, 1).Body)))
		req.Header.Set("X-Request-Id", id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request id %q: caller got %d", id, resp.StatusCode)
		}
	}

	// Straight onto the topics.
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(broker.Brokers, ",")...),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerBatchMaxBytes(16<<20), kgo.MaxBufferedBytes(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	now := time.Now()
	var recs []*kgo.Record
	keys := map[string]bool{} // of the hostile records, to tell their dead letters from others'
	add := func(topic, key string, v []byte, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		keys[key] = true
		recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(key), Value: v})
	}
	pre := experiment + "-"
	event := func(id, exp string) schemas.InferenceEvent {
		return schemas.InferenceEvent{
			RequestID: id, Experiment: exp, EventTime: now, Model: schemas.ModelRef{Name: champion.Name},
			Request:  schemas.HTTPRequest{Method: "POST", Path: "/v2/models/" + champion.Name + "/infer", Body: demo.NewRequest(7, 2).Body},
			Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.5)},
		}
	}
	badInference := map[string]schemas.InferenceEvent{}
	for name, exp := range map[string]string{
		"long": strings.Repeat("e", 3000), "nul": "exp\x00x", "utf8": "exp\xff", "huge": strings.Repeat("a", 10<<20),
	} {
		badInference[pre+name] = event(pre+name, exp)
	}
	for i := range 8 {
		ev := event(fmt.Sprintf("%sfuture-%d", pre, i), experiment)
		ev.EventTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)
		badInference[ev.RequestID] = ev
	}
	for id, ev := range badInference {
		v, err := codecs.Inference.Encode(nil, ev)
		add(schemas.TopicInference, id, v, err)
	}
	// Valid events that ask for what no shadow may get: they are shadowed as not_allowed.
	for i, call := range []struct{ method, path string }{
		{"POST", "/v2/repository/models/" + champion.Name + "/unload"},
		{"DELETE", "/v2/models/" + champion.Name + "/infer"},
	} {
		ev := event(fmt.Sprintf("%smgmt-%d", pre, i), experiment)
		ev.Request.Method, ev.Request.Path = call.method, call.path
		ev.Request.Headers = map[string]string{"authorization": "Bearer stolen", "cookie": "s=1"}
		v, err := codecs.Inference.Encode(nil, ev)
		add(schemas.TopicInference, ev.RequestID, v, err)
	}
	res := schemas.ShadowResult{RequestID: "", Experiment: experiment, Shadow: "candidate", EventTime: now}
	v, err := codecs.Shadow.Encode(nil, res)
	add(schemas.TopicShadow, "", v, err)
	res.RequestID, res.Latency = pre+"neg-latency", -time.Second
	v, err = codecs.Shadow.Encode(nil, res)
	add(schemas.TopicShadow, res.RequestID, v, err)
	v, err = codecs.Label.Encode(nil, schemas.LabelEvent{RequestID: pre + "label", Experiment: "exp\xfe", EventTime: now, Value: schemas.Number(1)})
	add(schemas.TopicLabels, pre+"label", v, err)
	for name, c := range map[string]schemas.Comparison{
		"cmp-shadow": {Experiment: experiment, Status: schemas.StatusComplete, Shadows: []schemas.Outcome{{Name: strings.Repeat("s", 3000)}}},
		"cmp-utf8":   {Experiment: "exp\xff", Status: schemas.StatusComplete},
		"cmp-status": {Experiment: experiment, Status: "bogus"},
	} {
		c.RequestID, c.EventTime = pre+name, now
		v, err := codecs.Comparison.Encode(nil, c)
		add(schemas.TopicComparisons, pre+name, v, err)
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	if res := demo.Traffic(ctx, p.ProxyURL, champion.Name, freshSeed(), good, 0, 8, champion, nil); res.OK != good || res.Mismatched != 0 {
		t.Fatalf("second good round: %+v", res)
	}
	db, err := pgxpool.New(ctx, postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// Both rounds and the two not_allowed events are joined and counted; nothing else is.
	const want = 2*good + 2
	waitCounts(ctx, t, db, experiment, want)
	wantDLQ := map[string]int{ // service/reason → at least this many
		"invoker/invalid": len(badInference), "joiner/invalid": len(badInference) + 3, "aggregator/invalid": 3,
	}
	deadLetters(ctx, t, keys, wantDLQ, time.Minute)
	for name, base := range p.OpsURLs {
		if err := ready(ctx, base); err != nil {
			t.Errorf("%s not ready after the hostile records: %v", name, err)
		}
	}
	shadow.mu.Lock()
	for path, n := range shadow.paths {
		if !strings.HasPrefix(path, "POST /v2/models/"+champion.Name+"/infer") {
			t.Errorf("the shadow got %d calls of %s", n, path)
		}
	}
	if shadow.auth != 0 {
		t.Errorf("the shadow got credentials %d times", shadow.auth)
	}
	shadow.mu.Unlock()
	if err := p.Stop(); err != nil {
		t.Fatalf("pipeline stopped with error: %v", err)
	}

	// A restart (from where every service left off) reads nothing twice and stops on nothing.
	p, err = pipeline.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Stop(); err != nil {
			t.Errorf("pipeline stopped with error: %v", err)
		}
	}()
	waitReady(t, ctx, p)
	time.Sleep(3 * time.Second) // time enough to re-read anything it would wrongly re-read
	counts, err := store.Counts(ctx, db, experiment)
	if err != nil || sum(counts) != want {
		t.Fatalf("after restart: counts %v (%v), want %d", counts, err, want)
	}
}

// waitCounts waits until Postgres holds exactly want final comparisons of experiment, and
// stays there for a moment.
func waitCounts(ctx context.Context, t *testing.T, db *pgxpool.Pool, experiment string, want int64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	var counts map[string]int64
	var err error
	for time.Now().Before(deadline) {
		counts, err = store.Counts(ctx, db, experiment)
		if err == nil && sum(counts) >= want {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * time.Second)
	counts, err = store.Counts(ctx, db, experiment)
	if err != nil || sum(counts) != want {
		t.Fatalf("Postgres counts %v (%v), want %d comparisons", counts, err, want)
	}
}

// deadLetters reads the dead-letter topic from the start until the dead letters of records
// with the given keys reach the wanted count of every service/reason.
func deadLetters(ctx context.Context, t *testing.T, keys map[string]bool, want map[string]int, within time.Duration) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(broker.Brokers, ",")...), kgo.ConsumeTopics(schemas.TopicDeadLetter),
		// read_uncommitted: an open transaction of a SIGKILLed producer in an earlier test must
		// not hold this read back (the counts are lower bounds, so aborted copies do no harm).
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	got := map[string]int{}
	done := func() bool {
		for k, n := range want {
			if got[k] < n {
				return false
			}
		}
		return true
	}
	rctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for !done() && rctx.Err() == nil {
		cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
			if !keys[string(r.Key)] {
				return
			}
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			got[h[schemas.HeaderDLQService]+"/"+h[schemas.HeaderDLQReason]]++
		})
	}
	if !done() {
		t.Fatalf("dead letters by service/reason %v, want at least %v", got, want)
	}
}

// ready returns nil when base's /readyz answers 200.
func ready(ctx context.Context, base string) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("status %d: %s", resp.StatusCode, body)
	}
	return nil
}
