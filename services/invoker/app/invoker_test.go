package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

func TestShadowsEveryEventAndDeadLettersGarbage(t *testing.T) {
	var shadowHeader atomic.Value
	shadow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		shadowHeader.Store(r.Header.Get(HeaderShadow))
		b, _ := io.ReadAll(r.Body)
		switch {
		case strings.Contains(string(b), "slow"):
			time.Sleep(300 * time.Millisecond)
		case strings.Contains(string(b), "garbage"):
			_, _ = w.Write([]byte("<html>oops"))
			return
		}
		_, _ = w.Write([]byte(`{"outputs":[{"data":[0.25]}]}`))
	}))
	defer shadow.Close()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.Ops.ListenAddr = "127.0.0.1:0"
	cfg.ShadowURL = shadow.URL
	cfg.Timeout = 100 * time.Millisecond
	inv, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- inv.Run(ctx) }()

	producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicShadow, schemas.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer producer.Close()
	for _, body := range []string{"fast", "slow", "garbage"} {
		v, err := inv.codecs.Inference.Encode(nil, schemas.InferenceEvent{RequestID: body, Experiment: "e", Request: schemas.HTTPRequest{Path: "/v2/models/m/infer", Body: []byte(body)}})
		if err != nil {
			t.Fatal(err)
		}
		producer.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte(body), Value: v})
	}
	producer.ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte("bad"), Value: []byte("not avro")})

	kinds := map[string]string{}
	dead := 0
	deadline, cancelPoll := context.WithTimeout(ctx, 15*time.Second)
	defer cancelPoll()
	for len(kinds) < 3 || dead < 1 {
		fs := producer.PollFetches(deadline)
		if err := fs.Err0(); err != nil {
			t.Fatalf("waiting for results: %v (got %v, %d dead letters)", err, kinds, dead)
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
			kind := "ok"
			if res.Error != nil {
				kind = res.Error.Kind
			}
			kinds[res.RequestID] = kind
		}
	}
	want := map[string]string{"fast": "ok", "slow": KindTimeout, "garbage": KindBadResponse}
	for k, v := range want {
		if kinds[k] != v {
			t.Errorf("result of %s: %q, want %q", k, kinds[k], v)
		}
	}
	if dead != 1 {
		t.Errorf("%d dead letters, want 1", dead)
	}
	if shadowHeader.Load() != "1" {
		t.Errorf("shadow saw %s=%v, want 1", HeaderShadow, shadowHeader.Load())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
