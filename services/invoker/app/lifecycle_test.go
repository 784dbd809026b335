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

// TestMain fails the package's tests when any goroutine outlives them, except fasthttp's own:
// its process-wide dialer cache cleaner, and each host client's idle-connection cleaner, which
// exits by itself once the client's idle connections time out.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"))
}

// TestCloseBeforeRun: an invoker built and closed without running leaves no goroutine (its
// intake client is released), and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cfg.Ops.ListenAddr = "127.0.0.1:0"
	cfg.ShadowURL = "http://127.0.0.1:1/v2/models/m/infer"
	inv, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	inv.Close()
	inv.Close()
}

// TestBadExperimentsFileIsAConfigError: Validate reads no file; New reports a bad experiments
// file as svc.ErrConfigFile, listing its problems, so launch reports it as configuration.
func TestBadExperimentsFileIsAConfigError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	if err := os.WriteFile(file, []byte("experiments:\n  - name: e\n    shadows:\n      - {name: s, url: 'ftp://x', timeout: -1s}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.ExperimentsFile = file
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate read the file: %v", err)
	}
	cfg.ExperimentsFile = filepath.Join(t.TempDir(), "missing.yaml")
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate read a missing file: %v", err)
	}
	cfg.ExperimentsFile = file
	_, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "experiments.file") || !strings.Contains(err.Error(), "url") {
		t.Fatalf("New: %v, want a configuration-file error naming experiments.file and the url", err)
	}
}
