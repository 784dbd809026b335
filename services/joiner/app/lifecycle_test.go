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

// TestCloseBeforeRun: a joiner built and closed without running leaves no goroutine (its
// Kafka session is released), and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers, cfg.Ops.ListenAddr = servicetest.Broker(t, 1), "127.0.0.1:0"
	j, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	j.Close()
}

// TestBadExperimentsFileIsAConfigError: New reports a bad experiments file as
// svc.ErrConfigFile, which launch reports as configuration (exit 2).
func TestBadExperimentsFileIsAConfigError(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.ExperimentsFile = servicetest.File(t, "experiments.yaml", "experiments:\n  - name: e\n    nope: 1\n")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "experiments.file") {
		t.Fatalf("New: %v, want a configuration-file error naming experiments.file", err)
	}
}
