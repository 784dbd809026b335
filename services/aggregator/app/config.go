package app

import (
	"errors"
	"flag"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
)

// Config is the aggregator's configuration.
type Config struct {
	Ops      server.Config
	Kafka    kafka.Config
	Registry registry.Config

	Group       string        // consumer group; replicas share it
	DatabaseURL string        // Postgres connection string
	Window      time.Duration // width of count windows
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Ops:         server.NewDefaultConfig(":9104"),
		Kafka:       kafka.NewDefaultConfig("aggregator"),
		Group:       "understudy-aggregator",
		DatabaseURL: "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		Window:      time.Minute,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Ops.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Registry.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all aggregator replicas")
	fs.StringVar(&c.DatabaseURL, "database.url", c.DatabaseURL, "Postgres connection string")
	fs.DurationVar(&c.Window, "window", c.Window, "width of count windows")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Ops.Validate(), c.Kafka.Validate(), c.Registry.Validate()}
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
