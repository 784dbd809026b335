package app

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/platform/experiment"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the aggregator's configuration.
type Config struct {
	svc.Common

	Group           string        // consumer group; replicas share it
	DatabaseURL     string        // Postgres connection string
	Window          time.Duration // width of base windows
	FlushInterval   time.Duration // longest wait for a batch (one Postgres transaction)
	ExperimentsFile string        // optional: expected shadows per experiment
	Retention       struct {
		Base, Hour, Day time.Duration
		Interval        time.Duration
	}
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	c := Config{
		Common:        svc.NewCommon("aggregator", ":9104"),
		Group:         "understudy-aggregator",
		DatabaseURL:   "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		Window:        time.Minute,
		FlushInterval: time.Second,
	}
	c.Retention.Base, c.Retention.Hour, c.Retention.Day = 7*24*time.Hour, 90*24*time.Hour, 730*24*time.Hour
	c.Retention.Interval = 10 * time.Minute
	return c
}

// levels returns the stored window widths: the base window, 1 hour and 1 day.
func (c *Config) levels() []store.Level {
	return []store.Level{{Width: c.Window, Retention: c.Retention.Base}, {Width: time.Hour, Retention: c.Retention.Hour}, {Width: 24 * time.Hour, Retention: c.Retention.Day}}
}

// expectedShadows reads the experiments file, if any.
func (c *Config) expectedShadows() (map[string][]string, error) {
	out := map[string][]string{}
	if c.ExperimentsFile == "" {
		return out, nil
	}
	exps, err := experiment.Load(c.ExperimentsFile)
	if err != nil {
		return nil, fmt.Errorf("experiments.file: %w", err)
	}
	for _, e := range exps {
		out[e.Name] = e.ShadowNames()
	}
	return out, nil
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all aggregator replicas")
	fs.StringVar(&c.DatabaseURL, "database.url", c.DatabaseURL, "Postgres connection string")
	fs.DurationVar(&c.Window, "window", c.Window, "width of base windows (must divide an hour); windows are rolled up into 1h and 1d windows")
	fs.DurationVar(&c.FlushInterval, "flush.interval", c.FlushInterval, "longest wait for a batch of comparisons; each batch is one Postgres transaction writing each touched window once")
	fs.StringVar(&c.ExperimentsFile, "experiments.file", c.ExperimentsFile, "experiments YAML (the invoker's file): each experiment's shadows are its expected shadows, and a comparison without one counts as shadow_missing in that shadow's windows")
	fs.DurationVar(&c.Retention.Base, "retention.base", c.Retention.Base, "how long base windows are kept")
	fs.DurationVar(&c.Retention.Hour, "retention.hour", c.Retention.Hour, "how long 1h windows are kept")
	fs.DurationVar(&c.Retention.Day, "retention.day", c.Retention.Day, "how long 1d windows are kept")
	fs.DurationVar(&c.Retention.Interval, "retention.interval", c.Retention.Interval, "how often expired windows are deleted")
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
	if c.FlushInterval < 10*time.Millisecond {
		errs = append(errs, errors.New("flush.interval: must be at least 10ms"))
	}
	if c.Retention.Interval <= 0 {
		errs = append(errs, errors.New("retention.interval: must be positive"))
	}
	return errors.Join(errs...)
}
