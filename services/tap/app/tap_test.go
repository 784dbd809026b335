package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

const championBody = `{"model_name":"fraud","id":"x","outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[0.875]}]}`

func newTestTap(t *testing.T, championURL string) (*Tap, *kgo.Client, *prometheus.Registry) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.ChampionURL = championURL
	cfg.Experiment = "exp"
	cfg.CaptureMaxBytes = 64
	reg := prometheus.NewRegistry()
	tap, err := New(cfg, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tap.client.Close)
	consumer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(consumer.Close)
	return tap, consumer, reg
}

func TestProxyReturnsChampionUntouchedAndPublishes(t *testing.T) {
	var gotHost, gotAuth, gotID string
	champion := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotAuth, gotID = r.Host, r.Header.Get("Authorization"), r.Header.Get(HeaderRequestID)
		_, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Model-Trace", "abc")
		w.WriteHeader(201)
		_, _ = w.Write([]byte(championBody))
	}))
	defer champion.Close()
	tap, consumer, reg := newTestTap(t, champion.URL)
	proxy := httptest.NewServer(tap.Handler())
	defer proxy.Close()

	const secret = "Bearer canary-secret-7f3a"
	body := `{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"padding":"` + strings.Repeat("z", 100) + `"}`
	req, _ := http.NewRequest("POST", proxy.URL+"/v2/models/fraud/infer", strings.NewReader(body))
	req.Host = "models.internal"
	req.Header.Set("Authorization", secret)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderRequestID, "req-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != 201 || string(got) != championBody || resp.Header.Get("X-Model-Trace") != "abc" {
		t.Fatalf("caller got %d %q trace=%q", resp.StatusCode, got, resp.Header.Get("X-Model-Trace"))
	}
	if resp.Header.Get(HeaderRequestID) != "req-42" || gotID != "req-42" {
		t.Fatalf("request id: caller %q champion %q", resp.Header.Get(HeaderRequestID), gotID)
	}
	if gotHost != "models.internal" || gotAuth != secret {
		t.Fatalf("champion saw host %q auth %q; both must pass through", gotHost, gotAuth)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fs := consumer.PollFetches(ctx)
	if err := fs.Err0(); err != nil {
		t.Fatal(err)
	}
	recs := fs.Records()
	if len(recs) != 1 || string(recs[0].Key) != "req-42" {
		t.Fatalf("want one event keyed req-42, got %d", len(recs))
	}
	if bytes.Contains(recs[0].Value, []byte("canary-secret")) {
		t.Fatal("the Authorization header leaked into the event")
	}
	ev, err := tap.codecs.Inference.Decode(ctx, recs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Experiment != "exp" || ev.Response.Status != 201 || !ev.Request.Truncated || ev.Request.OriginalSize != int64(len(body)) || len(ev.Request.Body) != 64 {
		t.Fatalf("event = %+v", ev)
	}
	// The response (99 bytes) exceeds the 64-byte capture limit: captured truncated, no prediction.
	if !ev.Response.Truncated || ev.Response.Prediction.Kind != schemas.PredictionNone {
		t.Fatalf("response capture = %+v", ev.Response)
	}
	if n := testutil.ToFloat64(tap.m.truncated); n != 1 {
		t.Fatalf("truncated counter = %v", n)
	}
	if metrics, _ := reg.Gather(); strings.Contains(metricsText(t, reg), "canary-secret") || len(metrics) == 0 {
		t.Fatal("the secret leaked into metrics, or no metrics")
	}
}

func TestPredictionExtractedAndChampionFailureRecorded(t *testing.T) {
	champion := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.5]}]}`))
	}))
	tap, consumer, _ := newTestTap(t, champion.URL)
	proxy := httptest.NewServer(tap.Handler())
	defer proxy.Close()
	for i := range 2 {
		if i == 1 {
			champion.Close() // the champion is down: the caller gets 502, the event says why
		}
		resp, err := http.Post(proxy.URL+"/v2/models/m/infer", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if want := []int{200, 502}[i]; resp.StatusCode != want {
			t.Fatalf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var events []schemas.InferenceEvent
	for len(events) < 2 {
		fs := consumer.PollFetches(ctx)
		if err := fs.Err0(); err != nil {
			t.Fatal(err)
		}
		for _, r := range fs.Records() {
			ev, err := tap.codecs.Inference.Decode(ctx, r.Value)
			if err != nil {
				t.Fatal(err)
			}
			events = append(events, ev)
		}
	}
	var ok, failed int
	for _, ev := range events {
		switch {
		case ev.Error == nil && ev.Response.Prediction.Equal(schemas.Number(0.5)) && ev.RequestID != "":
			ok++
		case ev.Error != nil && ev.Error.Kind == "connect" && ev.Response.Status == 502:
			failed++
		}
	}
	if ok != 1 || failed != 1 {
		t.Fatalf("events: %+v", events)
	}
}

func metricsText(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		b.WriteString(mf.String())
	}
	return b.String()
}
