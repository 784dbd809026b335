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

// TestCloseBeforeRun: an invoker built and closed without running leaves no goroutine (its
// intake client is released), and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers, cfg.Ops.ListenAddr = servicetest.Broker(t, 1), "127.0.0.1:0"
	cfg.ShadowURL = "http://127.0.0.1:1/v2/models/m/infer"
	inv, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	inv.Close()
	inv.Close()
}

// TestBadExperimentsFileIsAConfigError: Validate reads no file (not even a missing one); New
// reports a bad experiments file as svc.ErrConfigFile, listing its problems, so launch
// reports it as configuration.
func TestBadExperimentsFileIsAConfigError(t *testing.T) {
	cfg := NewDefaultConfig()
	cfg.ExperimentsFile = "/nonexistent/experiments.yaml"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate read a missing file: %v", err)
	}
	cfg.ExperimentsFile = servicetest.File(t, "experiments.yaml", "experiments:\n  - name: e\n    shadows:\n      - {name: s, url: 'ftp://x', timeout: -1s}\n")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate read the file: %v", err)
	}
	_, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "experiments.file") || !strings.Contains(err.Error(), "url") {
		t.Fatalf("New: %v, want a configuration-file error naming experiments.file and the url", err)
	}
}
