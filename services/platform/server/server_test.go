package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadyzTellsTheTruth(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(NewDefaultConfig("127.0.0.1:0"), slog.New(slog.DiscardHandler), reg)
	broken := errors.New("kafka: no broker answered")
	s.AddCheck("kafka", func(context.Context) error { return broken })
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	base := "http://" + addr.String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "no broker answered") {
		t.Fatalf("readyz with failing check = %d %s", code, body)
	}
	broken = nil
	if code, body := get("/readyz"); code != 200 {
		t.Fatalf("readyz with passing check = %d %s", code, body)
	}
	if code, _ := get("/metrics"); code != 200 {
		t.Fatalf("metrics = %d", code)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	http.DefaultClient.CloseIdleConnections()
}
