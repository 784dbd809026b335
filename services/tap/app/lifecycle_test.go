package app

import (
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/services/platform/servicetest"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

func TestMain(m *testing.M) { servicetest.VerifyNoLeaks(m) }

// TestCloseBeforeRun: a tap built, bound and closed without running leaves no goroutine and
// no listener, and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = servicetest.Broker(t, 1)
	cfg.Experiment, cfg.ChampionURL = "exp", "http://127.0.0.1:1"
	cfg.ListenAddr, cfg.Ops.ListenAddr = "127.0.0.1:0", "127.0.0.1:0"
	tp, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	addr, err := tp.Listen()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := tp.Close(); err != nil {
			t.Fatal(err)
		}
	}
	cfg.ListenAddr = addr.String() // the port is free again
	again, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Listen(); err != nil {
		t.Fatalf("the closed tap kept its listener: %v", err)
	}
	_ = again.Close()
}

// TestBadRoutesFileIsAConfigError: Validate reads no file; New reports a bad routes file
// (including a route the engine cannot serve) as svc.ErrConfigFile naming routes.file.
func TestBadRoutesFileIsAConfigError(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.RoutesFile = servicetest.File(t, "routes.yaml", "routes:\n  - {name: r, experiment: e, champion: {url: 'http://127.0.0.1:1', h2c: true}}\n")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "routes.file") || !strings.Contains(err.Error(), "h2c") {
		t.Fatalf("New: %v, want a configuration-file error naming routes.file and h2c", err)
	}
}
