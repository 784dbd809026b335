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

// TestCloseBeforeRun: an aggregator built and closed without running leaves no goroutine (its
// Kafka client and Postgres pool are released), and Close may be called again.
func TestCloseBeforeRun(t *testing.T) {
	a, err := New(newTestEnv(t, 1).config(), slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	a.Close()
	a.Close()
}

// TestBadFilesAreConfigErrors: Validate reads no file; New reports a bad alert rules file or
// experiments file as svc.ErrConfigFile naming its flag, before it builds anything.
func TestBadFilesAreConfigErrors(t *testing.T) {
	rules := servicetest.File(t, "rules.yaml", "rules: [{name: a, metric: nope}]\n")
	exps := servicetest.File(t, "experiments.yaml", "experiments: [{name: e, nope: 1}]\n")
	for flag, set := range map[string]func(*Config){
		"alerts.rules-file": func(c *Config) { c.Alerts.RulesFile = rules },
		"experiments.file":  func(c *Config) { c.ExperimentsFile = exps },
	} {
		cfg := NewDefaultConfig()
		cfg.DatabaseURL = "postgres://127.0.0.1:1/x"
		set(&cfg)
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: Validate: %v", flag, err)
		}
		if _, err := New(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); !errors.Is(err, svc.ErrConfigFile) || !strings.Contains(err.Error(), flag) {
			t.Fatalf("%s: New: %v, want a configuration-file error naming it", flag, err)
		}
	}
}
