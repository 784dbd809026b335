package app

import (
	"errors"
	"flag"
	"os"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/services/platform/svc"
)

// Config is the joiner's configuration.
type Config struct {
	svc.Common

	Group           string        // consumer group; every replica uses the same one
	InstanceID      string        // stable per replica: transactional id and static group member id
	Grace           time.Duration // added to the window for late or out-of-order inputs
	MaxBatch        int           // input records per transaction
	ExpectedShadows string        // comma-separated shadow names a complete comparison needs
	Window          time.Duration // how long a join waits for its missing sides
	MaxPending      int           // pending joins held in memory before consumption pauses
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Common:          svc.NewCommon("joiner", ":9103"),
		Group:           "understudy-joiner",
		InstanceID:      hostname(),
		Grace:           5 * time.Second,
		MaxBatch:        5000,
		ExpectedShadows: "candidate",
		Window:          60 * time.Second,
		MaxPending:      200000,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all joiner replicas")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "stable id of this replica (transactional id and static member id); must differ between replicas and survive restarts")
	fs.DurationVar(&c.Grace, "join.grace", c.Grace, "extra event time a join waits for late or out-of-order inputs")
	fs.IntVar(&c.MaxBatch, "batch.max-records", c.MaxBatch, "input records per Kafka transaction")
	fs.StringVar(&c.ExpectedShadows, "join.expected-shadows", c.ExpectedShadows, "comma-separated shadow names a complete comparison needs")
	fs.DurationVar(&c.Window, "join.window", c.Window, "how long a join waits for missing sides before it is emitted incomplete")
	fs.IntVar(&c.MaxPending, "join.max-pending", c.MaxPending, "pending joins held in memory; beyond it the joiner stops fetching until joins complete or expire")
}

// Shadows returns the expected shadow names.
func (c *Config) Shadows() []string {
	var out []string
	for _, s := range strings.Split(c.ExpectedShadows, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate()}
	if c.Group == "" {
		errs = append(errs, errors.New("kafka.group: required"))
	}
	if len(c.Shadows()) == 0 {
		errs = append(errs, errors.New("join.expected-shadows: at least one shadow name is required"))
	}
	if c.InstanceID == "" {
		errs = append(errs, errors.New("instance-id: required (stable per replica)"))
	}
	if c.Grace < 0 {
		errs = append(errs, errors.New("join.grace: must not be negative"))
	}
	if c.MaxBatch < 1 {
		errs = append(errs, errors.New("batch.max-records: must be at least 1"))
	}
	if c.Window <= 0 {
		errs = append(errs, errors.New("join.window: must be positive"))
	}
	if c.MaxPending < 1 {
		errs = append(errs, errors.New("join.max-pending: must be at least 1"))
	}
	return errors.Join(errs...)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}
