package alert

import (
	"errors"
	"flag"
	"time"

	"github.com/understudy-ml/understudy/services/aggregator/stats"
)

// Config configures evaluation. The alerts.* flags set its first four fields; Options and
// ExternalURL are the embedding service's (its statistics options and its API's address).
type Config struct {
	RulesFile string        // YAML rules; empty means DefaultRules; reloaded on SIGHUP
	Interval  time.Duration // evaluation step; ranges end on multiples of it
	// Range is what each evaluation's statistics cover, ending at the step; 0 (the default)
	// is everything since the experiment's first window, which is what the confidence
	// sequences are valid over: a finite range restarts them every Range.
	Range time.Duration
	Delay time.Duration // how far behind the clock a range ends, for late comparisons

	Options     stats.Options
	ExternalURL string // base of the read API for links in notifications
}

// DefaultConfig returns the defaults: a one-minute step over everything since the first
// window, ending a minute behind the clock.
func DefaultConfig() Config {
	return Config{Interval: time.Minute, Delay: time.Minute, Options: stats.DefaultOptions()}
}

// RegisterFlags registers the alerts.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.RulesFile, "alerts.rules-file", c.RulesFile, "alert rules YAML (reloaded on SIGHUP); empty uses the default rules")
	fs.DurationVar(&c.Interval, "alerts.interval", c.Interval, "alert evaluation step; a rule's for: counts these steps")
	fs.DurationVar(&c.Range, "alerts.range", c.Range, "time range of the statistics each evaluation checks; 0: everything since the experiment's first window, which the confidence sequences are valid over")
	fs.DurationVar(&c.Delay, "alerts.delay", c.Delay, "how far behind the clock evaluated ranges end, so late comparisons (the joiner's window and grace) are in")
}

// Validate reports every problem of the alerts.* settings; it reads no file (Load does).
func (c *Config) Validate() error {
	var errs []error
	if c.Interval < time.Second {
		errs = append(errs, errors.New("alerts.interval: must be at least 1s"))
	}
	if c.Range != 0 && c.Range < c.Interval {
		errs = append(errs, errors.New("alerts.range: must be 0 (since the experiment began) or at least alerts.interval"))
	}
	if c.Delay < 0 {
		errs = append(errs, errors.New("alerts.delay: must not be negative"))
	}
	return errors.Join(errs...)
}
