// Command joiner aligns champion and shadow outputs by request id and emits comparisons. See
// package app.
package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/services/joiner/app"
	"github.com/understudy-ml/understudy/services/platform/launch"
)

func main() {
	cfg := app.NewDefaultConfig()
	os.Exit(launch.Main("joiner", &cfg, os.Args[1:], func(l *slog.Logger, r *prometheus.Registry) (launch.Runner, error) {
		return app.New(cfg, l, r)
	}))
}
