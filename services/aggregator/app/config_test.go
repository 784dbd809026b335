package app

import (
	"testing"
	"time"

	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

func TestValidate(t *testing.T) {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	servicetest.CheckValidate(t, NewDefaultConfig, (*Config).Validate, []servicetest.ConfigCase[Config]{
		{Name: "every aggregation problem at once", Change: func(c *Config) {
			c.Group, c.DatabaseURL, c.Window, c.SessionTimeout = "", "postgres://a b:x", 7*time.Second, time.Second
			c.FlushInterval, c.RollupInterval, c.Retention.Interval, c.Stats.Bins, c.Examples = 0, 0, 0, 1, -1
		}, Want: []string{"kafka.group", "database.url", "window", "kafka.session-timeout", "flush.interval", "rollup.interval", "retention.interval", "stats.psi-bins", "examples.per-kind"}},
		{Name: "too many examples", Change: func(c *Config) { c.Examples = maxExamples + 1 }, Want: []string{"examples.per-kind"}},
		{Name: "retention shorter than the windows it keeps", Change: func(c *Config) { c.Retention.Hour = time.Minute }, Want: []string{"retention"}},
		{Name: "alert settings", Change: func(c *Config) {
			c.Alerts.Interval, c.Alerts.Range, c.Alerts.Delay = 500*time.Millisecond, 100*time.Millisecond, -time.Second
		}, Want: []string{"alerts.interval", "alerts.range", "alerts.delay"}},
		{Name: "webhook settings, never echoing the URL or secrets", Change: func(c *Config) {
			c.Webhook.URL, c.Webhook.Secret, c.Webhook.Format, c.Webhook.Timeout = "ftp://user:pw@hooks.example/T0KEN", "whsec_not*base64", "xml", 0
		}, Want: []string{"webhook.url", "webhook.secret", "webhook.format", "webhook: timeout"}, NotWant: []string{"T0KEN", "pw@", "not*base64"}},
		{Name: "a previous secret needs a current one", Change: func(c *Config) { c.Webhook.SecretPrevious = secret }, Want: []string{"webhook.secret-previous"}, NotWant: []string{secret}},
		{Name: "a secret too short", Change: func(c *Config) { c.Webhook.Secret = "whsec_c2hvcnQ=" }, Want: []string{"webhook.secret", "shorter than 16 bytes"}},
		{Name: "a rotation", Change: func(c *Config) {
			c.Webhook.URL, c.Webhook.Secret, c.Webhook.SecretPrevious = "https://hooks.example/x", secret, secret
		}},
		{Name: "shared service settings", Change: func(c *Config) { c.Kafka.Brokers, c.StallTimeout = "", 0 }, Want: []string{"kafka.brokers", "ready.stall-timeout"}},
		{Name: "the files are not read", Change: func(c *Config) {
			c.ExperimentsFile, c.Alerts.RulesFile = "/nonexistent/experiments.yaml", "/nonexistent/rules.yaml"
		}},
	})
}
