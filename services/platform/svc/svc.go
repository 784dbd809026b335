// Package svc holds the configuration every Understudy service shares: its operational HTTP
// server, its Kafka client and the optional schema registry. Service Configs embed Common.
package svc

import (
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/understudy-ml/understudy/schemas"

	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
)

// ErrConfigFile classifies an error in a configuration file (experiments, routes, alert
// rules) found when a service's New loads it. Validate never reads files; New reads each file
// once, and launch.Main reports these errors as it reports Validate's: "invalid
// configuration", exit code 2.
var ErrConfigFile = errors.New("bad configuration file")

// FileError marks err, found loading the file named by flag, as ErrConfigFile.
func FileError(flag string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrConfigFile, flag, err)
}

// Common is the shared part of a service's configuration.
type Common struct {
	Ops      server.Config
	Kafka    kafka.Config
	Registry registry.Config
	// Limits bound every value a service reads from Kafka before it becomes a Postgres key, a
	// metric label, a header or another record; records beyond them are dead-lettered.
	Limits schemas.Limits
	// StallTimeout: /readyz fails once work has waited this long without completing (a write
	// retried forever, batches refused one after another).
	StallTimeout time.Duration
	// ShutdownTimeout bounds every wait at shutdown: the batch in progress (its calls, its
	// produce and commit), draining connections, flushing buffered events.
	ShutdownTimeout time.Duration
}

// NewCommon returns the defaults of service, whose operational server listens on opsAddr.
func NewCommon(service, opsAddr string) Common {
	return Common{Ops: server.NewDefaultConfig(opsAddr), Kafka: kafka.NewDefaultConfig(service), Limits: schemas.DefaultLimits(), StallTimeout: 20 * time.Second, ShutdownTimeout: 15 * time.Second}
}

// RegisterFlags registers http.*, kafka.* and schema-registry.* flags.
func (c *Common) RegisterFlags(fs *flag.FlagSet) {
	c.Ops.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Registry.RegisterFlags(fs)
	fs.IntVar(&c.Limits.MaxID, "records.max-id-bytes", c.Limits.MaxID, "Longest request id accepted from Kafka, in bytes.")
	fs.IntVar(&c.Limits.MaxName, "records.max-name-bytes", c.Limits.MaxName, "Longest experiment, shadow, tenant, model, class label or error kind accepted from Kafka, in bytes.")
	fs.IntVar(&c.Limits.MaxVector, "records.max-vector", c.Limits.MaxVector, "Most elements of a vector prediction accepted from Kafka.")
	fs.DurationVar(&c.StallTimeout, "ready.stall-timeout", c.StallTimeout, "/readyz fails once work has waited this long without completing")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "how long the work in progress at shutdown (the last batch, in-flight requests, buffered events) may take to finish")
	fs.DurationVar(&c.Limits.MaxFuture, "records.max-future-skew", c.Limits.MaxFuture, "How far an event time may lie ahead of this service's clock; later records are dead-lettered.")
}

// Validate reports every problem of the shared settings.
func (c *Common) Validate() error {
	var errs []error
	for _, l := range []struct {
		name string
		v    int
	}{{"records.max-id-bytes", c.Limits.MaxID}, {"records.max-name-bytes", c.Limits.MaxName}, {"records.max-vector", c.Limits.MaxVector}} {
		if l.v <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive, got %d", l.name, l.v))
		}
	}
	if c.StallTimeout <= 0 {
		errs = append(errs, fmt.Errorf("ready.stall-timeout must be positive, got %s", c.StallTimeout))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown-timeout must be positive, got %s", c.ShutdownTimeout))
	}
	if c.Limits.MaxFuture < 0 {
		errs = append(errs, fmt.Errorf("records.max-future-skew must not be negative, got %s", c.Limits.MaxFuture))
	}
	return errors.Join(append([]error{c.Ops.Validate(), c.Kafka.Validate(), c.Registry.Validate()}, errs...)...)
}
