package app

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/svc"
	"go.uber.org/goleak"
)

// TestMain fails the package's tests when any goroutine outlives them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestCloseBeforeRun: a joiner built and closed without running leaves no goroutine (its
// Kafka session is released), and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.Ops.ListenAddr = "127.0.0.1:0"
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
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(file, []byte("experiments:\n  - name: e\n    nope: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.ExperimentsFile = file
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if _, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "experiments.file") {
		t.Fatalf("New: %v, want a configuration-file error naming experiments.file", err)
	}
}
