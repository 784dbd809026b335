// Package launch is the shared body of every service's main: flags with env overrides,
// validation that lists every problem, a JSON slog logger, a Prometheus registry with Go and
// process collectors, signal handling, and an exit code.
package launch

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/understudy-ml/understudy/services/platform/flagenv"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Configurable is a service Config.
type Configurable interface {
	RegisterFlags(fs *flag.FlagSet)
	Validate() error
}

// Runner is a wired service: Run blocks until ctx ends and returns after draining.
type Runner interface {
	Run(ctx context.Context) error
}

// Main parses args into cfg, builds the service with build and runs it until SIGINT or
// SIGTERM. It returns the process exit code: 0 after a clean stop, 1 on a runtime error,
// 2 on bad flags or configuration (Validate's errors, and build's errors that are
// svc.ErrConfigFile: a configuration file build loaded).
func Main(service string, cfg Configurable, args []string, build func(*slog.Logger, *prometheus.Registry) (Runner, error)) int {
	fs := flag.NewFlagSet(service, flag.ContinueOnError)
	cfg.RegisterFlags(fs)
	if err := flagenv.Parse(fs, service, args, flagenv.LookupEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "%s: %v\n", service, err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: invalid configuration:\n%v\n", service, err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("service", service)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	r, err := build(logger, reg)
	if errors.Is(err, svc.ErrConfigFile) {
		fmt.Fprintf(os.Stderr, "%s: invalid configuration:\n%v\n", service, err)
		return 2
	}
	if err != nil {
		logger.Error("start failed", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := r.Run(ctx); err != nil {
		logger.Error("stopped with error", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// ReloadOnHangup calls reload on every SIGHUP until ctx ends, logging failures (the caller's
// reload keeps its old configuration when the new one is invalid).
func ReloadOnHangup(ctx context.Context, logger *slog.Logger, what string, reload func() error) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := reload(); err != nil {
				logger.Error(what+" reload failed", "err", err)
			}
		}
	}
}
