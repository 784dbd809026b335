package app

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestReloadKeepsOldExperimentsOnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "experiments.yaml")
	write := func(s string) {
		if err := os.WriteFile(file, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("experiments:\n  - name: a\n    shadows:\n      - {name: s1, url: http://127.0.0.1:1}\n")
	cfg := NewDefaultConfig()
	cfg.Kafka.Brokers = "127.0.0.1:1"
	cfg.ExperimentsFile = file
	inv, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer inv.intake.close()
	write("experiments:\n  - name: a\n    shadows:\n      - {name: s1, url: 'ftp://x', max_in_flight: -2}\n")
	err = inv.Reload()
	if err == nil || !strings.Contains(err.Error(), "not an http(s) URL") || !strings.Contains(err.Error(), "max_in_flight") {
		t.Fatalf("reload error %v should list every problem", err)
	}
	if got := len(inv.callers.Load().byLane); got != 1 {
		t.Fatalf("after a rejected reload experiment a has %d shadows", got)
	}
	write("experiments:\n  - name: a\n    shadows:\n      - {name: s1, url: http://127.0.0.1:1}\n      - {name: s2, url: http://127.0.0.1:2}\n  - name: b\n    shadows:\n      - {name: s3, url: http://127.0.0.1:3}\n")
	if err := inv.Reload(); err != nil {
		t.Fatal(err)
	}
	set := inv.callers.Load()
	if len(set.byLane) != 3 || set.byLane[laneKey{"b", "s3"}] == nil || !set.explicit["a"] {
		t.Fatalf("after reload: %v", set.byLane)
	}
}
