package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

const championBody = `{"model_name":"fraud","model_version":"6","id":"x","outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[0.875]}]}`

type fixture struct {
	tap      *Tap
	proxyURL string
	consumer *kgo.Client
	reg      *prometheus.Registry
	logs     *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newFixture starts a tap (configured by cfgFn) on an in-process broker and an HTTP server.
func newFixture(t *testing.T, cfgFn func(*Config)) *fixture {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.Experiment = "exp"
	cfg.ChampionURL = "http://127.0.0.1:1"
	cfgFn(&cfg)
	f := &fixture{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	logger := slog.New(slog.NewJSONHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cfg.ListenAddr, cfg.Ops.ListenAddr = "127.0.0.1:0", "127.0.0.1:0"
	f.tap, err = New(cfg, logger, f.reg)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := f.tap.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.tap.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("tap stopped with error: %v", err)
		}
	})
	f.proxyURL = "http://" + addr.String()
	f.consumer, err = kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.consumer.Close)
	return f
}

// events polls until n events arrived and returns them with their raw values.
func (f *fixture) events(t *testing.T, n int) ([]schemas.InferenceEvent, [][]byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var evs []schemas.InferenceEvent
	var raw [][]byte
	for len(evs) < n {
		fs := f.consumer.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("waiting for %d events, have %d: %v", n, len(evs), err)
		}
		for _, r := range fs.Records() {
			ev, err := f.tap.codecs.Inference.Decode(ctx, r.Value)
			if err != nil {
				t.Fatal(err)
			}
			if string(r.Key) != ev.RequestID {
				t.Fatalf("record key %q, event request id %q", r.Key, ev.RequestID)
			}
			evs = append(evs, ev)
			raw = append(raw, r.Value)
		}
	}
	return evs, raw
}

func (f *fixture) do(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// notCaptured reads understudy_events_not_captured_total{reason} from the registry.
func (f *fixture) notCaptured(t *testing.T, reason string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "understudy_events_not_captured_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func championServer(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func TestProxyReturnsChampionUntouchedAndPublishes(t *testing.T) {
	bothEngines(t, testProxyReturnsChampionUntouchedAndPublishes)
}

func testProxyReturnsChampionUntouchedAndPublishes(t *testing.T, engine string) {
	var gotHost, gotAuth, gotID string
	champion := championServer(t, func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotAuth, gotID = r.Host, r.Header.Get("Authorization"), r.Header.Get(HeaderRequestID)
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Model-Trace", "abc")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(championBody))
	})
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.ChampionURL = champion; c.CaptureMaxBytes = 64 })
	body := `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"padding":"` + strings.Repeat("z", 100) + `"}`
	req, _ := http.NewRequest("POST", f.proxyURL+"/v2/models/fraud/infer", strings.NewReader(body))
	req.Host = "models.internal"
	req.Header.Set("Authorization", "Bearer t0ken")
	req.Header.Set(HeaderRequestID, "req-42")
	resp, got := f.do(t, req)
	if resp.StatusCode != 201 || string(got) != championBody || resp.Header.Get("X-Model-Trace") != "abc" {
		t.Fatalf("caller got %d %q trace=%q", resp.StatusCode, got, resp.Header.Get("X-Model-Trace"))
	}
	if resp.Header.Get(HeaderRequestID) != "req-42" || gotID != "req-42" {
		t.Fatalf("request id: caller %q champion %q", resp.Header.Get(HeaderRequestID), gotID)
	}
	if gotHost != "models.internal" || gotAuth != "Bearer t0ken" {
		t.Fatalf("champion saw host %q auth %q; both must pass through", gotHost, gotAuth)
	}
	evs, _ := f.events(t, 1)
	ev := evs[0]
	if ev.Experiment != "exp" || ev.Response.Status != 201 || !ev.Request.Truncated || ev.Request.OriginalSize != int64(len(body)) || len(ev.Request.Body) != 64 {
		t.Fatalf("event = %+v", ev)
	}
	// The response exceeds the 64-byte capture limit: captured truncated, so no prediction.
	if !ev.Response.Truncated || ev.Response.Prediction.Kind != schemas.PredictionNone {
		t.Fatalf("response capture = %+v", ev.Response)
	}
	if _, ok := ev.Request.Headers["authorization"]; ok {
		t.Fatal("Authorization captured")
	}
}

func TestRequestIdentityModelAndPrediction(t *testing.T) {
	bothEngines(t, testRequestIdentityModelAndPrediction)
}

func testRequestIdentityModelAndPrediction(t *testing.T, engine string) {
	champion := championServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(championBody))
	})
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.ChampionURL = champion })
	// No X-Request-Id: the OIP body id is used.
	req, _ := http.NewRequest("POST", f.proxyURL+"/v2/models/fraud/versions/6/infer", strings.NewReader(`{"id":"oip-7","inputs":[]}`))
	resp, _ := f.do(t, req)
	if resp.Header.Get(HeaderRequestID) != "oip-7" {
		t.Fatalf("request id %q, want the OIP id", resp.Header.Get(HeaderRequestID))
	}
	// Neither: a UUIDv7 is generated.
	req, _ = http.NewRequest("POST", f.proxyURL+"/v2/models/fraud/infer", strings.NewReader(`{"inputs":[]}`))
	resp, _ = f.do(t, req)
	if id := resp.Header.Get(HeaderRequestID); len(id) != 36 || id[14] != '7' {
		t.Fatalf("generated id %q is not a UUIDv7", id)
	}
	evs, _ := f.events(t, 2)
	for _, ev := range evs {
		if ev.Model.Name != "fraud" || ev.Model.Version != "6" || !ev.Response.Prediction.Equal(schemas.Number(0.875)) {
			t.Fatalf("event model %+v prediction %+v", ev.Model, ev.Response.Prediction)
		}
	}
}

func TestChampionFailuresPassThroughAndAreRecorded(t *testing.T) {
	bothEngines(t, testChampionFailuresPassThroughAndAreRecorded)
}

func testChampionFailuresPassThroughAndAreRecorded(t *testing.T, engine string) {
	slow := championServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/models/slow/infer" {
			time.Sleep(300 * time.Millisecond)
		}
		w.WriteHeader(503)
		_, _ = w.Write([]byte("overloaded"))
	})
	dir := t.TempDir()
	routes := filepath.Join(dir, "routes.yaml")
	writeFile(t, routes, `routes:
  - name: ok
    match: {path_prefix: /v2/models/m}
    experiment: e
    champion: {url: `+slow+`}
  - name: slow
    match: {path_prefix: /v2/models/slow}
    experiment: e
    champion: {url: `+slow+`, timeout: 100ms}
  - name: down
    match: {path_prefix: /v2/models/down}
    experiment: e
    champion: {url: "http://127.0.0.1:1"}
`)
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.RoutesFile = routes })
	for path, want := range map[string]int{"/v2/models/m/infer": 503, "/v2/models/slow/infer": 504, "/v2/models/down/infer": 502} {
		req, _ := http.NewRequest("POST", f.proxyURL+path, strings.NewReader(`{}`))
		resp, body := f.do(t, req)
		if resp.StatusCode != want {
			t.Fatalf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
		if want == 503 && string(body) != "overloaded" {
			t.Fatalf("champion's error body changed: %q", body)
		}
	}
	evs, _ := f.events(t, 3)
	kinds := map[int32]string{}
	for _, ev := range evs {
		if ev.Error == nil {
			t.Fatalf("event without error: %+v", ev)
		}
		kinds[ev.Response.Status] = ev.Error.Kind
	}
	if kinds[503] != "http_status" || kinds[504] != "timeout" || kinds[502] != "connect" {
		t.Fatalf("error kinds by status: %v", kinds)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// bothEngines runs a proxy test against the fast and the standard engine.
func bothEngines(t *testing.T, test func(t *testing.T, engine string)) {
	for _, engine := range []string{EngineFast, EngineStd} {
		t.Run(engine, func(t *testing.T) { test(t, engine) })
	}
}
