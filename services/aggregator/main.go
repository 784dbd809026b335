// Command aggregator counts comparisons per experiment and window in Postgres. See package
// app.
package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/services/aggregator/app"
	"github.com/understudy-ml/understudy/services/platform/launch"
)

func main() {
	cfg := app.NewDefaultConfig()
	os.Exit(launch.Main("aggregator", &cfg, os.Args[1:], func(l *slog.Logger, r *prometheus.Registry) (launch.Runner, error) {
		return app.New(cfg, l, r)
	}))
}
