package app

import (
	"testing"
	"time"

	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

func TestValidate(t *testing.T) {
	servicetest.CheckValidate(t, NewDefaultConfig, (*Config).Validate, []servicetest.ConfigCase[Config]{
		{Name: "every join problem at once", Change: func(c *Config) {
			c.Group, c.ExpectedShadows, c.InstanceID = "", "", ""
			c.Grace, c.MaxBatch, c.Window, c.MaxPending, c.BodyLimit = -time.Second, 0, 0, 0, -1
		}, Want: []string{"kafka.group", "join.expected-shadows", "instance-id", "join.grace", "batch.max-records", "join.window", "join.max-pending", "comparison.body-limit"}},
		{Name: "bodies too large to keep", Change: func(c *Config) { c.BodyLimit = maxBodyLimit + 1 }, Want: []string{"comparison.body-limit"}},
		{Name: "no bodies kept", Change: func(c *Config) { c.BodyLimit = 0 }},
		{Name: "label problems", Change: func(c *Config) {
			c.DatabaseURL, c.LabelWindow, c.LabelBucket, c.RetainInterval = "postgres://a b:x", 0, 7*time.Second, 0
		}, Want: []string{"database.url", "labels.window", "labels.bucket", "labels.retention-interval"}},
		{Name: "label settings are ignored without labels", Change: func(c *Config) {
			c.Labels, c.DatabaseURL, c.LabelBucket = false, "postgres://a b:x", 7*time.Second
		}},
		{Name: "shared service settings", Change: func(c *Config) {
			c.Kafka.Brokers, c.StallTimeout, c.ShutdownTimeout = "", 0, 0
		}, Want: []string{"kafka.brokers", "ready.stall-timeout", "shutdown-timeout"}},
		{Name: "the experiments file is not read", Change: func(c *Config) { c.ExperimentsFile = "/nonexistent/experiments.yaml" }},
	})
}
