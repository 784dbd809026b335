package webhook

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// Body formats a Sender can be configured with (see Config.Format).
const (
	FormatStandard = "standard" // the queued payload as is: versioned JSON
	FormatSlack    = "slack"    // a Slack-compatible incoming-webhook body
)

// Config configures delivery; the webhook.* flags set it.
type Config struct {
	URL            string        // receiver; empty disables delivery (messages stay queued)
	Secret         string        // whsec_<base64>; signs every request; empty sends unsigned
	SecretPrevious string        // also signs during a rotation
	Format         string        // FormatStandard or FormatSlack; the embedding service maps it to a Formatter
	Timeout        time.Duration // per attempt
	BackoffMin     time.Duration // first retry delay
	BackoffMax     time.Duration // retry delay cap
	MaxAge         time.Duration // a message still undelivered this long after queueing fails
	Poll           time.Duration // how often the outbox is checked
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Format: FormatStandard, Timeout: 5 * time.Second, BackoffMin: time.Second, BackoffMax: 5 * time.Minute, MaxAge: 24 * time.Hour, Poll: time.Second}
}

// RegisterFlags registers the webhook.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "webhook.url", c.URL, "alert webhook receiver; empty keeps notifications queued in the outbox")
	fs.StringVar(&c.Secret, "webhook.secret", c.Secret, "Standard Webhooks signing secret (whsec_<base64>)")
	fs.StringVar(&c.SecretPrevious, "webhook.secret-previous", c.SecretPrevious, "previous signing secret, also signed with during a rotation")
	fs.StringVar(&c.Format, "webhook.format", c.Format, "body format: standard (versioned JSON) or slack (Slack-compatible text)")
	fs.DurationVar(&c.Timeout, "webhook.timeout", c.Timeout, "timeout of one delivery attempt")
	fs.DurationVar(&c.BackoffMin, "webhook.backoff-min", c.BackoffMin, "first retry delay (exponential with full jitter)")
	fs.DurationVar(&c.BackoffMax, "webhook.backoff-max", c.BackoffMax, "longest retry delay")
	fs.DurationVar(&c.MaxAge, "webhook.max-age", c.MaxAge, "a notification undelivered this long after it was queued fails")
	fs.DurationVar(&c.Poll, "webhook.poll", c.Poll, "how often the outbox is checked")
}

// Validate reports every problem. Errors never contain the URL or the secrets.
func (c *Config) Validate() error {
	var errs []error
	if c.URL != "" {
		if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, errors.New("webhook.url: must be an http or https URL"))
		}
	}
	if _, err := c.Secrets(); err != nil {
		errs = append(errs, err)
	}
	if c.Format != FormatStandard && c.Format != FormatSlack {
		errs = append(errs, errors.New("webhook.format: must be standard or slack"))
	}
	if c.Timeout <= 0 || c.BackoffMin <= 0 || c.BackoffMax < c.BackoffMin || c.MaxAge <= 0 || c.Poll <= 0 {
		errs = append(errs, errors.New("webhook: timeout, backoff-min, max-age and poll must be positive and backoff-max at least backoff-min"))
	}
	return errors.Join(errs...)
}

// Secrets decodes the signing secrets, current first.
func (c *Config) Secrets() ([][]byte, error) {
	if c.SecretPrevious != "" && c.Secret == "" {
		return nil, errors.New("webhook.secret-previous: needs webhook.secret")
	}
	var out [][]byte
	for _, s := range []struct{ flag, value string }{{"webhook.secret", c.Secret}, {"webhook.secret-previous", c.SecretPrevious}} {
		if s.value == "" {
			continue
		}
		k, err := apiv1.ParseSecret(s.value)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.flag, err)
		}
		out = append(out, k)
	}
	return out, nil
}
