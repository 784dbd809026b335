package app

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/experiment"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/svc"
)

// AnyExperiment in an experiment name matches events of every experiment.
const AnyExperiment = "*"

// Config is the invoker's configuration. Shadows come from ExperimentsFile when it is set,
// otherwise from the single-shadow flags (shadow.*).
type Config struct {
	svc.Common

	Group           string // consumer group; every replica uses the same one
	InstanceID      string // stable per replica: the transactional id is understudy-invoker-<instance-id>
	ExperimentsFile string // YAML experiments; reloaded on SIGHUP
	MaxBatch        int    // events per transaction
	FetchMaxBytes   int32  // compressed bytes fetched ahead of processing; with MaxBatch, bounds memory under lag
	// PacingDelay: a call leaves this long after the champion answered, so calls keep the
	// gaps between requests; older requests leave at once. 0 turns pacing off.
	PacingDelay time.Duration

	// The single shadow used when ExperimentsFile is empty.
	Experiment    string
	ShadowName    string
	ShadowRole    string
	ShadowURL     string
	ShadowModel   string
	ShadowVersion string
	Protocol      string
	Timeout       time.Duration
	MaxInFlight   int
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Common:        svc.NewCommon("invoker", ":9102"),
		Group:         "understudy-invoker",
		InstanceID:    host,
		MaxBatch:      2000,
		FetchMaxBytes: 1 << 20,
		PacingDelay:   100 * time.Millisecond,
		Experiment:    AnyExperiment,
		ShadowName:    "candidate",
		ShadowRole:    schemas.RoleCandidate,
		Protocol:      predict.ProtocolOIPv2,
		Timeout:       2 * time.Second,
		MaxInFlight:   64,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all invoker replicas")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "stable id of this replica (transactional id suffix); must differ between replicas and survive restarts")
	fs.StringVar(&c.ExperimentsFile, "experiments.file", c.ExperimentsFile, "YAML experiments file (reloaded on SIGHUP); without it the shadow.* flags define one shadow")
	fs.IntVar(&c.MaxBatch, "batch.max-events", c.MaxBatch, "events per Kafka transaction")
	fs.Func("batch.fetch-max-bytes", fmt.Sprintf("compressed bytes fetched ahead of processing (events compress about 10x); with batch.max-events it bounds memory while a slow shadow builds lag (default %d)", c.FetchMaxBytes), func(v string) error {
		n, err := strconv.ParseInt(v, 10, 32)
		c.FetchMaxBytes = int32(n)
		return err
	})
	fs.DurationVar(&c.PacingDelay, "pacing.delay", c.PacingDelay, "a shadow call leaves this long after the champion answered its request (event time plus latency), keeping the gaps between requests (older requests leave at once; more than 1 s old is a backlog, caught up as fast as the budget allows); 0 turns pacing off")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "single shadow: experiment to shadow (* for all)")
	fs.StringVar(&c.ShadowName, "shadow.name", c.ShadowName, "single shadow: name used in results and comparisons")
	fs.StringVar(&c.ShadowRole, "shadow.role", c.ShadowRole, "single shadow: candidate or noise_baseline")
	fs.StringVar(&c.ShadowURL, "shadow.url", c.ShadowURL, "single shadow: base URL (captured path appended) or full endpoint URL")
	fs.StringVar(&c.ShadowModel, "shadow.model-name", c.ShadowModel, "single shadow: model name (default: the shadow name)")
	fs.StringVar(&c.ShadowVersion, "shadow.model-version", c.ShadowVersion, "single shadow: model version")
	fs.StringVar(&c.Protocol, "shadow.protocol", c.Protocol, "single shadow: oip-v2, kserve-v1 or json-pointer:/path")
	fs.DurationVar(&c.Timeout, "shadow.timeout", c.Timeout, "single shadow: time limit of one call")
	fs.IntVar(&c.MaxInFlight, "shadow.max-in-flight", c.MaxInFlight, "single shadow: calls in flight per replica")
}

// Experiments returns the experiments the config describes: the experiments file when one is
// set (read now), else the single shadow of the flags.
func (c *Config) Experiments() ([]experiment.Experiment, error) {
	if c.ExperimentsFile != "" {
		return experiment.Load(c.ExperimentsFile)
	}
	s := experiment.Shadow{
		Name: c.ShadowName, Role: c.ShadowRole, URL: c.ShadowURL, Protocol: c.Protocol,
		Model: c.ShadowModel, Version: c.ShadowVersion, Timeout: c.Timeout, MaxInFlight: c.MaxInFlight,
	}
	s.Defaults()
	exps := []experiment.Experiment{{Name: c.Experiment, Shadows: []experiment.Shadow{s}}}
	return exps, experiment.Validate(exps)
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("kafka.group: required"))
	}
	if c.InstanceID == "" {
		errs = append(errs, errors.New("instance-id: required (stable per replica)"))
	}
	if c.FetchMaxBytes < 64<<10 {
		errs = append(errs, errors.New("batch.fetch-max-bytes: must be at least 64 KiB"))
	}
	if c.PacingDelay < 0 || c.PacingDelay > catchUpAge {
		errs = append(errs, fmt.Errorf("pacing.delay: must be between 0 and %s, got %s", catchUpAge, c.PacingDelay))
	}
	if c.MaxBatch < 1 {
		errs = append(errs, errors.New("batch.max-events: must be at least 1"))
	}
	if c.ExperimentsFile == "" { // a file is read by New (Validate reads no file)
		if _, err := c.Experiments(); err != nil {
			errs = append(errs, fmt.Errorf("experiments: %w", err))
		}
	}
	return errors.Join(errs...)
}
