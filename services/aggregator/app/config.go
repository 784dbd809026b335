package app

import (
	"errors"
	"flag"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the aggregator's configuration.
type Config struct {
	svc.Common

	Group       string        // consumer group; replicas share it
	DatabaseURL string        // Postgres connection string
	Window      time.Duration // width of count windows
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Common:      svc.NewCommon("aggregator", ":9104"),
		Group:       "understudy-aggregator",
		DatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		Window:      time.Minute,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all aggregator replicas")
	fs.StringVar(&c.DatabaseURL, "database.url", c.DatabaseURL, "Postgres connection string")
	fs.DurationVar(&c.Window, "window", c.Window, "width of count windows")
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
	if c.Window < time.Second {
		errs = append(errs, errors.New("window: must be at least 1s"))
	}
	return errors.Join(errs...)
}
