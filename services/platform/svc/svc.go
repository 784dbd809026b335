// Package svc holds the configuration every Understudy service shares: its operational HTTP
// server, its Kafka client and the optional schema registry. Service Configs embed Common.
package svc

import (
	"errors"
	"flag"

	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
)

// Common is the shared part of a service's configuration.
type Common struct {
	Ops      server.Config
	Kafka    kafka.Config
	Registry registry.Config
}

// NewCommon returns the defaults of service, whose operational server listens on opsAddr.
func NewCommon(service, opsAddr string) Common {
	return Common{Ops: server.NewDefaultConfig(opsAddr), Kafka: kafka.NewDefaultConfig(service)}
}

// RegisterFlags registers http.*, kafka.* and schema-registry.* flags.
func (c *Common) RegisterFlags(fs *flag.FlagSet) {
	c.Ops.RegisterFlags(fs)
	c.Kafka.RegisterFlags(fs)
	c.Registry.RegisterFlags(fs)
}

// Validate reports every problem of the shared settings.
func (c *Common) Validate() error {
	return errors.Join(c.Ops.Validate(), c.Kafka.Validate(), c.Registry.Validate())
}
