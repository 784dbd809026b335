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
// its process-wide dialer cache cleaner and server date updater, and the cleaners of each host
// client's idle connections and each server's idle workers, which exit by themselves within
// their idle timeouts after Close or Shutdown.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

// TestCloseBeforeRun: a tap built, bound and closed without running leaves no goroutine and
// no listener, and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, schemas.TopicInference))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = strings.Join(cluster.ListenAddrs(), ",")
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
	if err := tp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tp.Close(); err != nil {
		t.Fatal(err)
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
	file := filepath.Join(t.TempDir(), "routes.yaml")
	if err := os.WriteFile(file, []byte("routes:\n  - {name: r, experiment: e, champion: {url: 'http://127.0.0.1:1', h2c: true}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := NewDefaultConfig()
	cfg.RoutesFile = file
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), "routes.file") || !strings.Contains(err.Error(), "h2c") {
		t.Fatalf("New: %v, want a configuration-file error naming routes.file and h2c", err)
	}
}
