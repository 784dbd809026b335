package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

func TestMetricsAndProfilesBehindTheToken(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		path string
		auth string
		want int
	}{
		{"metrics open without a token", Config{}, "/metrics", "", 200},
		{"metrics refused without the token", Config{Token: "s3cret"}, "/metrics", "", 401},
		{"metrics refused with a wrong token", Config{Token: "s3cret"}, "/metrics", "Bearer nope", 401},
		{"metrics with the token", Config{Token: "s3cret"}, "/metrics", "Bearer s3cret", 200},
		{"pprof off by default", Config{}, "/debug/pprof/", "", 404},
		{"pprof refused without the token", Config{Token: "s3cret", Pprof: true}, "/debug/pprof/", "", 401},
		{"pprof with the token", Config{Token: "s3cret", Pprof: true}, "/debug/pprof/", "Bearer s3cret", 200},
		{"probes stay open", Config{Token: "s3cret"}, "/healthz", "", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(tc.cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
			req := httptest.NewRequest("GET", tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			rec := httptest.NewRecorder()
			s.Mux().ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("%s: %d, want %d", tc.path, rec.Code, tc.want)
			}
		})
	}
}
