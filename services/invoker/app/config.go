package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the invoker's configuration.
type Config struct {
	svc.Common

	Group            string        // consumer group; every replica uses the same one
	Experiment       string        // only events of this experiment are shadowed ("" = all)
	ShadowName       string        // name of the shadow in results and comparisons
	ShadowRole       string        // candidate or noise_baseline
	ShadowURL        string        // base URL (request path appended) or full endpoint URL
	ShadowModel      string        // model name reported in results
	ShadowVersion    string        // model version reported in results
	Protocol         string        // predict spec of the shadow's responses
	Timeout          time.Duration // per shadow call
	Concurrency      int           // shadow calls in flight per replica
	ResponseMaxBytes int           // shadow bodies kept in results up to this size
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Common:           svc.NewCommon("invoker", ":9102"),
		Group:            "understudy-invoker",
		ShadowName:       "candidate",
		ShadowRole:       schemas.RoleCandidate,
		ShadowModel:      "candidate",
		Protocol:         predict.ProtocolOIPv2,
		Timeout:          2 * time.Second,
		Concurrency:      64,
		ResponseMaxBytes: 64 << 10,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all invoker replicas")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "shadow only events of this experiment (empty: all)")
	fs.StringVar(&c.ShadowName, "shadow.name", c.ShadowName, "shadow name used in results and comparisons")
	fs.StringVar(&c.ShadowRole, "shadow.role", c.ShadowRole, "candidate or noise_baseline")
	fs.StringVar(&c.ShadowURL, "shadow.url", c.ShadowURL, "shadow base URL (captured path appended) or full endpoint URL (required)")
	fs.StringVar(&c.ShadowModel, "shadow.model-name", c.ShadowModel, "shadow model name")
	fs.StringVar(&c.ShadowVersion, "shadow.model-version", c.ShadowVersion, "shadow model version")
	fs.StringVar(&c.Protocol, "shadow.protocol", c.Protocol, "how to extract predictions: oip-v2, kserve-v1 or json-pointer:/path")
	fs.DurationVar(&c.Timeout, "shadow.timeout", c.Timeout, "time limit of one shadow call")
	fs.IntVar(&c.Concurrency, "shadow.concurrency", c.Concurrency, "shadow calls in flight per replica")
	fs.IntVar(&c.ResponseMaxBytes, "shadow.response-max-bytes", c.ResponseMaxBytes, "shadow response bodies kept up to this size")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("kafka.group: required"))
	}
	if c.ShadowName == "" {
		errs = append(errs, errors.New("shadow.name: required"))
	}
	if c.ShadowRole != schemas.RoleCandidate && c.ShadowRole != schemas.RoleNoiseBaseline {
		errs = append(errs, fmt.Errorf("shadow.role: %q is neither candidate nor noise_baseline", c.ShadowRole))
	}
	if u, err := url.Parse(c.ShadowURL); err != nil || u.Scheme == "" || u.Host == "" {
		errs = append(errs, fmt.Errorf("shadow.url: %q is not an absolute URL", c.ShadowURL))
	}
	if _, err := predict.Parse(c.Protocol); err != nil {
		errs = append(errs, fmt.Errorf("shadow.protocol: %w", err))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("shadow.timeout: must be positive"))
	}
	if c.Concurrency < 1 {
		errs = append(errs, errors.New("shadow.concurrency: must be at least 1"))
	}
	if c.ResponseMaxBytes < 0 {
		errs = append(errs, errors.New("shadow.response-max-bytes: must not be negative"))
	}
	return errors.Join(errs...)
}
