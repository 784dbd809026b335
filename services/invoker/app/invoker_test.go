package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

// TestShadowsEveryEventOnceAndDeadLettersGarbage runs the invoker on an in-process broker
// with transactions: two shadows, one of them broken, and an undecodable event.
func TestShadowsEveryEventOnceAndDeadLettersGarbage(t *testing.T) {
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.25]}]}`))
	}))
	defer good.Close()
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("garbage")) }))
	defer bad.Close()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(file, []byte("experiments:\n  - name: e\n    shadows:\n      - {name: good, url: "+good.URL+"}\n      - {name: bad, url: "+bad.URL+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.Ops.ListenAddr = "127.0.0.1:0"
	cfg.ExperimentsFile = file
	inv, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx) }()

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicShadow, schemas.TopicDeadLetter),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	const n = 50
	for i := range n {
		id := "r" + string(rune('A'+i%26)) + string(rune('a'+i/26))
		v, err := inv.codecs.Inference.Encode(nil, schemas.InferenceEvent{RequestID: id, Experiment: "e", EventTime: time.Now(), Request: schemas.HTTPRequest{Path: "/v2/models/m/infer", Body: []byte(`{}`)}})
		if err != nil {
			t.Fatal(err)
		}
		cl.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte(id), Value: v})
	}
	cl.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte("junk"), Value: []byte("not avro")})
	cl.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte("other"), Value: mustEncode(t, inv, "unknown-experiment")})

	type key struct{ id, shadow string }
	seen := map[key]string{}
	dead := 0
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	defer pcancel()
	for len(seen) < 2*n || dead < 1 {
		fs := cl.PollFetches(pctx)
		if err := fs.Err0(); err != nil {
			t.Fatalf("have %d results, %d dead letters: %v", len(seen), dead, err)
		}
		for _, r := range fs.Records() {
			if r.Topic == schemas.TopicDeadLetter {
				dead++
				continue
			}
			res, err := inv.codecs.Shadow.Decode(ctx, r.Value)
			if err != nil {
				t.Fatal(err)
			}
			if res.Dispatch == "" {
				t.Fatalf("result %s/%s does not say how its call was dispatched", res.RequestID, res.Shadow)
			}
			k := key{res.RequestID, res.Shadow}
			if _, dup := seen[k]; dup {
				t.Fatalf("second result for %v", k)
			}
			seen[k] = "ok"
			if res.Error != nil {
				seen[k] = res.Error.Kind
			}
		}
	}
	for k, v := range seen {
		if (k.shadow == "good" && v != "ok") || (k.shadow == "bad" && v != "bad_response") {
			t.Fatalf("%v: %s", k, v)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func mustEncode(t *testing.T, inv *Invoker, experiment string) []byte {
	t.Helper()
	v, err := inv.codecs.Inference.Encode(nil, schemas.InferenceEvent{RequestID: "other", Experiment: experiment, EventTime: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
