package app

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/aggregator/alert"
	"github.com/understudy-ml/understudy/services/aggregator/stats"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/webhook"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the aggregator's configuration.
type Config struct {
	svc.Common

	Group           string        // consumer group; replicas share it
	InstanceID      string        // optional static group membership: a restarted replica gets its partitions back at once
	SessionTimeout  time.Duration // how long the group waits for a silent replica before moving its partitions
	DatabaseURL     string        // Postgres connection string
	Window          time.Duration // width of base windows
	FlushInterval   time.Duration // longest wait for a batch (one Postgres transaction)
	ExperimentsFile string        // optional: expected shadows per experiment
	RollupInterval  time.Duration // how often dirty 1h and 1d windows are recomputed
	Examples        int           // example requests kept per base window, shadow and kind; 0: none
	Retention       struct {
		Base, Hour, Day time.Duration
		Interval        time.Duration
	}
	Stats   stats.Options
	Alerts  alert.Config   // alerts.* flags; New sets its Options and ExternalURL from Stats and API
	Webhook webhook.Config // webhook.* flags
	API     APIConfig
}

// APIConfig configures the read API (served on the ops address).
type APIConfig struct {
	ExternalURL string // base URL of this API as receivers of notifications reach it
	Token       string // optional bearer token required by every API request
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	c := Config{
		Common:         svc.NewCommon("aggregator", ":9104"),
		Group:          "understudy-aggregator",
		DatabaseURL:    "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		Window:         time.Minute,
		FlushInterval:  time.Second,
		SessionTimeout: 45 * time.Second,
		RollupInterval: 30 * time.Second,
		Examples:       5,
	}
	c.Retention.Base, c.Retention.Hour, c.Retention.Day = 7*24*time.Hour, 90*24*time.Hour, 730*24*time.Hour
	c.Retention.Interval = 10 * time.Minute
	c.Stats = stats.DefaultOptions()
	c.Alerts = alert.DefaultConfig()
	c.Webhook = webhook.DefaultConfig()
	c.API.ExternalURL = "http://localhost:9104"
	return c
}

// maxExamples bounds examples.per-kind: each window, shadow and kind keeps at most this many
// rows with payloads.
const maxExamples = 100

// levels returns the stored window widths: the base window, 1 hour and 1 day.
func (c *Config) levels() []store.Level {
	return []store.Level{{Width: c.Window, Retention: c.Retention.Base}, {Width: time.Hour, Retention: c.Retention.Hour}, {Width: 24 * time.Hour, Retention: c.Retention.Day}}
}

// experimentSettings reads the experiments file, if any: each experiment's expected shadows,
// how its numeric predictions are compared and its segments (a Segmenter each, nil for
// none).
func (c *Config) experimentSettings() (map[string][]string, map[string]window.Compare, map[string]*window.Segmenter, error) {
	expected, compare, segments := map[string][]string{}, map[string]window.Compare{}, map[string]*window.Segmenter{}
	if c.ExperimentsFile == "" {
		return expected, compare, segments, nil
	}
	exps, err := experiment.Load(c.ExperimentsFile)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("experiments.file: %w", err)
	}
	for _, e := range exps {
		expected[e.Name] = e.ShadowNames()
		segments[e.Name] = window.NewSegmenter(e.Segments)
		cmp := window.Compare{Absolute: e.Compare.Tolerance.Absolute, Relative: e.Compare.Tolerance.Relative}
		if e.Compare.Threshold != nil {
			cmp.Threshold = *e.Compare.Threshold
		}
		compare[e.Name] = cmp
	}
	return expected, compare, segments, nil
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all aggregator replicas")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "optional stable id of this replica (Kafka static membership): a replica restarted with the same id gets its partitions back without waiting for the session timeout")
	fs.DurationVar(&c.SessionTimeout, "kafka.session-timeout", c.SessionTimeout, "how long the group waits for a silent replica before moving its partitions to the others")
	fs.StringVar(&c.DatabaseURL, "database.url", c.DatabaseURL, "Postgres connection string")
	fs.DurationVar(&c.Window, "window", c.Window, "width of base windows (must divide an hour); windows are rolled up into 1h and 1d windows")
	fs.DurationVar(&c.FlushInterval, "flush.interval", c.FlushInterval, "longest wait for a batch of comparisons; each batch is one Postgres transaction writing each touched window once")
	fs.StringVar(&c.ExperimentsFile, "experiments.file", c.ExperimentsFile, "experiments YAML (the invoker's file): each experiment's shadows are its expected shadows, and a comparison without one counts as shadow_missing in that shadow's windows")
	fs.DurationVar(&c.RollupInterval, "rollup.interval", c.RollupInterval, "how often 1h and 1d windows touched by new comparisons are recomputed from the finer windows (reads stay exact meanwhile)")
	fs.IntVar(&c.Examples, "examples.per-kind", c.Examples, "example requests kept per base window, shadow and kind (largest differences, flips, shadow and champion errors, labeled requests one model got right, a uniform sample), with their bodies; kept as long as base windows; 0 keeps none")
	fs.DurationVar(&c.Retention.Base, "retention.base", c.Retention.Base, "how long base windows are kept")
	fs.DurationVar(&c.Retention.Hour, "retention.hour", c.Retention.Hour, "how long 1h windows are kept")
	fs.DurationVar(&c.Retention.Day, "retention.day", c.Retention.Day, "how long 1d windows are kept")
	fs.DurationVar(&c.Retention.Interval, "retention.interval", c.Retention.Interval, "how often expired windows are deleted")
	fs.IntVar(&c.Stats.Bins, "stats.psi-bins", c.Stats.Bins, "PSI bins, with edges at the champion's quantiles")
	fs.Uint64Var(&c.Stats.MinLabels, "stats.min-labels", c.Stats.MinLabels, "labeled requests needed before label metrics and their difference are shown")
	c.Alerts.RegisterFlags(fs)
	c.Webhook.RegisterFlags(fs)
	fs.StringVar(&c.API.ExternalURL, "api.external-url", c.API.ExternalURL, "base URL of the read API as notification receivers reach it (for links)")
	fs.StringVar(&c.API.Token, "api.token", c.API.Token, "bearer token required by the read API; empty leaves it open")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("kafka.group: required"))
	}
	if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
		errs = append(errs, errors.New("database.url: not a valid Postgres connection string"))
	}
	if c.Window < time.Second || time.Hour%c.Window != 0 {
		errs = append(errs, errors.New("window: must be at least 1s and divide an hour"))
	} else if err := store.ValidateLevels(c.levels()); err != nil {
		errs = append(errs, fmt.Errorf("retention: %w", err))
	}
	if c.SessionTimeout < 6*time.Second || c.SessionTimeout > 5*time.Minute {
		errs = append(errs, errors.New("kafka.session-timeout: must be 6s..5m (the broker's group.min/max.session.timeout.ms defaults)"))
	}
	if c.FlushInterval < 10*time.Millisecond {
		errs = append(errs, errors.New("flush.interval: must be at least 10ms"))
	}
	if c.RollupInterval <= 0 {
		errs = append(errs, errors.New("rollup.interval: must be positive"))
	}
	if c.Retention.Interval <= 0 {
		errs = append(errs, errors.New("retention.interval: must be positive"))
	}
	if c.Examples < 0 || c.Examples > maxExamples {
		errs = append(errs, fmt.Errorf("examples.per-kind: must be 0..%d", maxExamples))
	}
	if c.Stats.Bins < 2 || c.Stats.Bins > 100 {
		errs = append(errs, errors.New("stats.psi-bins: must be 2..100"))
	}
	errs = append(errs, c.Alerts.Validate(), c.Webhook.Validate())
	return errors.Join(errs...)
}
