package producer_test

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/tap/producer"
)

// Publish inference events from your own serving code, with the tap's encoding, keys and
// spool, instead of putting the tap in front of the model.
func Example() {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		panic(err)
	}
	cfg := producer.NewDefaultConfig()
	cfg.Kafka.Brokers = "kafka-1:9092,kafka-2:9092"
	cfg.SpoolDir = "/var/lib/my-model/understudy-spool" // survives Kafka outages up to SpoolMaxBytes
	p, err := producer.New(cfg, codecs.Inference, slog.New(slog.NewJSONHandler(os.Stderr, nil)), prometheus.NewRegistry())
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { _ = p.Run(ctx) }() // writes and replays the spool

	// In the request path: never blocks, never fails for Kafka trouble.
	_ = p.Publish(schemas.InferenceEvent{
		RequestID:  "0193a0c2-7a10-7000-8000-000000000001", // also the record key
		Experiment: "fraud-v7",
		Model:      schemas.ModelRef{Name: "fraud", Version: "6"},
		EventTime:  time.Now(),
		Request:    schemas.HTTPRequest{Method: "POST", Path: "/v2/models/fraud/infer", ContentType: "application/json", Body: []byte(`{"inputs":[]}`)},
		Response:   schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.87)},
		Latency:    1200 * time.Microsecond,
	})

	// At shutdown: stop the spool loop, then flush what is buffered.
	cancel()
	sctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	_ = p.Close(sctx)
}
