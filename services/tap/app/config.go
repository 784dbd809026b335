package app

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the tap's configuration.
type Config struct {
	svc.Common

	ListenAddr      string        // address of the proxy
	ChampionURL     string        // base URL of the champion model server
	Experiment      string        // experiment the captured events belong to
	Tenant          string        // optional tenant tag
	ModelName       string        // champion model name (OIP v2 responses may override it)
	ModelVersion    string        // champion model version
	Protocol        string        // predict spec: oip-v2, kserve-v1 or json-pointer:/path
	CaptureMaxBytes int           // bodies larger than this are proxied in full, captured truncated
	BufferRecords   int           // events buffered for Kafka before new ones are dropped
	ShutdownTimeout time.Duration // time to drain the proxy and flush buffered events
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Common:          svc.NewCommon("tap", ":9101"),
		ListenAddr:      ":8080",
		ModelName:       "champion",
		Protocol:        predict.ProtocolOIPv2,
		CaptureMaxBytes: 512 << 10,
		BufferRecords:   10000,
		ShutdownTimeout: 15 * time.Second,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.ListenAddr, "proxy.listen-addr", c.ListenAddr, "address the proxy listens on")
	fs.StringVar(&c.ChampionURL, "champion.url", c.ChampionURL, "base URL of the champion model server (required)")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "experiment name of captured events (required)")
	fs.StringVar(&c.Tenant, "tenant", c.Tenant, "tenant tag of captured events")
	fs.StringVar(&c.ModelName, "champion.model-name", c.ModelName, "champion model name")
	fs.StringVar(&c.ModelVersion, "champion.model-version", c.ModelVersion, "champion model version")
	fs.StringVar(&c.Protocol, "champion.protocol", c.Protocol, "how to extract predictions: oip-v2, kserve-v1 or json-pointer:/path")
	fs.IntVar(&c.CaptureMaxBytes, "capture.max-bytes", c.CaptureMaxBytes, "largest body captured whole; larger ones are proxied in full and captured truncated")
	fs.IntVar(&c.BufferRecords, "capture.buffer-records", c.BufferRecords, "events buffered for Kafka; beyond it events are dropped and counted, never waited for")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", c.ShutdownTimeout, "time to drain the proxy and flush buffered events at shutdown")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("proxy.listen-addr: %w", err))
	}
	if u, err := url.Parse(c.ChampionURL); err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, fmt.Errorf("champion.url: %q is not an absolute URL", c.ChampionURL))
	}
	if c.Experiment == "" {
		errs = append(errs, errors.New("experiment: required"))
	}
	if _, err := predict.Parse(c.Protocol); err != nil {
		errs = append(errs, fmt.Errorf("champion.protocol: %w", err))
	}
	if c.CaptureMaxBytes < 0 || c.CaptureMaxBytes > 900<<10 {
		errs = append(errs, errors.New("capture.max-bytes: must be between 0 and 921600 (below Kafka's 1 MiB message limit)"))
	}
	if c.BufferRecords < 1 {
		errs = append(errs, errors.New("capture.buffer-records: must be at least 1"))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("shutdown-timeout: must be positive"))
	}
	return errors.Join(errs...)
}
