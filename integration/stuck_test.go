package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
)

// TestStuckJoinerTurnsUnready: when the joiner cannot write its label state (here its table
// is renamed away under it, so every write fails and is retried), /readyz turns false within
// 30 s instead of staying green while nothing moves; once the table is back it recovers.
func TestStuckJoinerTurnsUnready(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	exp := fmt.Sprintf("stuck-%d", time.Now().UnixNano())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ops := ln.Addr().String()
	_ = ln.Close()
	cfg := joiner.NewDefaultConfig()
	cfg.Kafka.Brokers, cfg.Ops.ListenAddr = broker.Brokers, ops
	cfg.Group, cfg.InstanceID, cfg.ExpectedShadows = exp, exp, "a"
	cfg.DatabaseURL, cfg.Window, cfg.Grace = ownDatabase(ctx, t, exp), 3*time.Second, 0
	cfg.StallTimeout = 5 * time.Second
	startAtEnd(ctx, t, cfg.Group)
	j := startJoiner(t, cfg)
	base := "http://" + ops
	waitFor(t, time.Minute, "joiner ready", func() bool { return ready(ctx, base) == nil })

	db, err := pgx.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = db.Close(ctx) }()
	if _, err := db.Exec(ctx, `ALTER TABLE joiner_predictions RENAME TO joiner_predictions_gone`); err != nil {
		t.Fatal(err)
	}
	codecs, _ := schemas.NewCodecs()
	id := exp + "-r1"
	ev, _ := codecs.Inference.Encode(nil, schemas.InferenceEvent{RequestID: id, Experiment: exp, EventTime: time.Now(), Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.5)}})
	res, _ := codecs.Shadow.Encode(nil, schemas.ShadowResult{RequestID: id, Experiment: exp, Shadow: "a", EventTime: time.Now(), Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.5)}})
	if err := newClient(t).ProduceSync(ctx, &kgo.Record{Topic: schemas.TopicInference, Key: []byte(id), Value: ev},
		&kgo.Record{Topic: schemas.TopicShadow, Key: []byte(id), Value: res}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var why error
	// False, and saying that nothing moves (not only a Kafka session being replaced).
	waitFor(t, 30*time.Second, "/readyz false with no progress while the label store refuses every write", func() bool {
		why = ready(ctx, base)
		return why != nil && strings.Contains(why.Error(), "no progress")
	})
	t.Logf("unready %s after the stuck write began: %v", time.Since(start).Round(100*time.Millisecond), why)
	if _, err := db.Exec(ctx, `ALTER TABLE joiner_predictions_gone RENAME TO joiner_predictions`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "/readyz true again once writes succeed", func() bool { return ready(ctx, base) == nil })
	j.stop(t)
}

// waitFor polls cond every 200 ms until it holds, or fails the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
