package app

import (
	"testing"
	"time"

	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := NewDefaultConfig()
		c.ShadowURL = "http://127.0.0.1:8081"
		return c
	}
	servicetest.CheckValidate(t, valid, (*Config).Validate, []servicetest.ConfigCase[Config]{
		{Name: "every problem at once", Change: func(c *Config) {
			c.Group, c.InstanceID, c.FetchMaxBytes, c.PacingDelay, c.MaxBatch = "", "", 1024, -time.Second, 0
		}, Want: []string{"kafka.group", "instance-id", "batch.fetch-max-bytes", "pacing.delay", "batch.max-events"}},
		{Name: "pacing beyond catching up", Change: func(c *Config) { c.PacingDelay = catchUpAge + time.Second }, Want: []string{"pacing.delay"}},
		{Name: "pacing off", Change: func(c *Config) { c.PacingDelay = 0 }},
		{Name: "the single shadow from flags", Change: func(c *Config) { c.ShadowURL = "" }, Want: []string{"experiments"}},
		{Name: "shared service settings", Change: func(c *Config) { c.Kafka.Brokers, c.ShutdownTimeout = "", 0 }, Want: []string{"kafka.brokers", "shutdown-timeout"}},
		{Name: "the experiments file is not read", Change: func(c *Config) { c.ShadowURL, c.ExperimentsFile = "", "/nonexistent/experiments.yaml" }},
	})
}
