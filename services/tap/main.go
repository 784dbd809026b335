// Command tap is Understudy's capture proxy: it sits in front of the champion model, returns
// its answers untouched and publishes every request and answer to Kafka. See package app.
package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/services/platform/launch"
	"github.com/understudy-ml/understudy/services/tap/app"
)

func main() {
	cfg := app.NewDefaultConfig()
	os.Exit(launch.Main("tap", &cfg, os.Args[1:], func(l *slog.Logger, r *prometheus.Registry) (launch.Runner, error) {
		return app.New(cfg, l, r)
	}))
}
