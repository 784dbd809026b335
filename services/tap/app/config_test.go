package app

import (
	"testing"

	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

func TestValidate(t *testing.T) {
	valid := func() Config {
		c := NewDefaultConfig()
		c.ChampionURL, c.Experiment = "http://127.0.0.1:8081", "exp"
		return c
	}
	servicetest.CheckValidate(t, valid, (*Config).Validate, []servicetest.ConfigCase[Config]{
		{Name: "every problem at once", Change: func(c *Config) {
			c.Kafka.Brokers, c.ListenAddr, c.SampleRate = "", "nope", 3
			c.ChampionURL, c.Experiment = "", ""
			c.ReadTimeout, c.StreamTimeout, c.Engine, c.MaxBodyBytes = 0, 0, "turbo", 1024
		}, Want: []string{
			"kafka.brokers", "proxy.listen-addr", "experiment is required", "champion.url", "sampling.rate",
			"proxy.read-timeout", "proxy.stream-timeout", "proxy.engine", "proxy.max-body-bytes",
		}},
		{Name: "capture settings", Change: func(c *Config) {
			c.Producer.BufferRecords, c.Producer.DeliveryTimeout, c.Producer.Linger = 0, 0, -1
			c.Producer.SpoolDir, c.Producer.SpoolMaxBytes = "/spool", 1
		}, Want: []string{"capture.buffer-records", "capture.delivery-timeout", "capture.linger", "capture.spool-max-bytes"}},
		{Name: "the routes file is not read", Change: func(c *Config) { c.ChampionURL, c.Experiment, c.RoutesFile = "", "", "/nonexistent/routes.yaml" }},
	})
}
