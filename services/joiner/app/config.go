package app

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/experiment"
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
	ExperimentsFile string        // optional: per-experiment expected shadows and windows
	BodyLimit       int           // bytes of each request and response body a comparison keeps; 0: none

	Labels         bool          // join labels (needs DatabaseURL)
	DatabaseURL    string        // Postgres holding the long-lived label state
	LabelWindow    time.Duration // default label window (label event time − request event time)
	LabelBucket    time.Duration // width of the label state's time partitions
	RetainInterval time.Duration // how often expired label-state buckets are dropped
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	return Config{
		Common:          svc.NewCommon("joiner", ":9103"),
		Group:           defaultGroup,
		InstanceID:      hostname(),
		Grace:           5 * time.Second,
		MaxBatch:        5000,
		ExpectedShadows: "candidate",
		Window:          60 * time.Second,
		MaxPending:      200000,
		BodyLimit:       1024,
		Labels:          true,
		DatabaseURL:     "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		LabelWindow:     7 * 24 * time.Hour,
		LabelBucket:     24 * time.Hour,
		RetainInterval:  time.Minute,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	fs.StringVar(&c.Group, "kafka.group", c.Group, "consumer group shared by all joiner replicas; a group other than the default gets its own changelog topics (suffixed with .<group>)")
	fs.StringVar(&c.InstanceID, "instance-id", c.InstanceID, "stable id of this replica (transactional id and static member id); must differ between replicas and survive restarts")
	fs.DurationVar(&c.Grace, "join.grace", c.Grace, "extra event time a join waits for late or out-of-order inputs")
	fs.IntVar(&c.MaxBatch, "batch.max-records", c.MaxBatch, "input records per Kafka transaction")
	fs.StringVar(&c.ExpectedShadows, "join.expected-shadows", c.ExpectedShadows, "comma-separated shadow names a complete comparison needs")
	fs.DurationVar(&c.Window, "join.window", c.Window, "how long a join waits for missing sides before it is emitted incomplete")
	fs.IntVar(&c.MaxPending, "join.max-pending", c.MaxPending, "pending joins held in memory; beyond it the joiner stops fetching until joins complete or expire")
	fs.StringVar(&c.ExperimentsFile, "experiments.file", c.ExperimentsFile, "experiments YAML (the invoker's file): each experiment's shadows are its expected shadows, and its join: block overrides join.window, join.grace and labels.window; experiments not listed use the flags")
	fs.IntVar(&c.BodyLimit, "comparison.body-limit", c.BodyLimit, "bytes of the request body and of each response body a comparison keeps (as captured, redaction applied), so that the aggregator can show example requests; longer bodies are cut and marked truncated; 0 keeps none. Bodies are held in the pending joins (memory: about 600 bytes per pending join plus the bodies kept) and the label state too")
	fs.BoolVar(&c.Labels, "labels.enabled", c.Labels, "join ground-truth labels from the labels topic (needs database.url)")
	fs.StringVar(&c.DatabaseURL, "database.url", c.DatabaseURL, "Postgres connection string for the long-lived label state")
	fs.DurationVar(&c.LabelWindow, "labels.window", c.LabelWindow, "how much later than its request a label may be (label event time minus request event time)")
	fs.DurationVar(&c.LabelBucket, "labels.bucket", c.LabelBucket, "time partition width of the label state in Postgres; expired partitions are dropped whole")
	fs.DurationVar(&c.RetainInterval, "labels.retention-interval", c.RetainInterval, "how often expired label-state partitions are dropped and their orphaned labels counted")
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
	if c.BodyLimit < 0 || c.BodyLimit > maxBodyLimit {
		errs = append(errs, fmt.Errorf("comparison.body-limit: must be between 0 and %d bytes", maxBodyLimit))
	}
	if c.Labels {
		if _, err := pgxpool.ParseConfig(c.DatabaseURL); err != nil {
			errs = append(errs, errors.New("database.url: not a valid Postgres connection string"))
		}
		if c.LabelWindow <= 0 {
			errs = append(errs, errors.New("labels.window: must be positive"))
		}
		if c.LabelBucket < time.Second || (24*time.Hour)%c.LabelBucket != 0 {
			errs = append(errs, errors.New("labels.bucket: must be at least 1s and divide 24h"))
		}
		if c.RetainInterval <= 0 {
			errs = append(errs, errors.New("labels.retention-interval: must be positive"))
		}
	}
	return errors.Join(errs...)
}

func hostname() string {
	h, _ := os.Hostname()
	return h
}

// Policy returns each experiment's join rules: from the experiments file when one is given
// (overriding the flags per experiment), else the flags for every experiment.
func (c *Config) policy() (*policy, error) {
	p := &policy{def: &rules{expected: c.Shadows(), horizon: c.Window + c.Grace, labelWindow: c.LabelWindow}, exps: map[string]*rules{}, bodyLimit: c.BodyLimit}
	if c.ExperimentsFile == "" {
		return p, nil
	}
	exps, err := experiment.Load(c.ExperimentsFile)
	if err != nil {
		return nil, err
	}
	for _, e := range exps {
		window, grace, labels := c.Window, c.Grace, c.LabelWindow
		if e.Join.Window > 0 {
			window = e.Join.Window
		}
		if e.Join.Grace > 0 {
			grace = e.Join.Grace
		}
		if e.Join.LabelWindow > 0 {
			labels = e.Join.LabelWindow
		}
		p.exps[e.Name] = &rules{expected: e.ShadowNames(), horizon: window + grace, labelWindow: labels, segments: e.Segments.Keys}
	}
	return p, nil
}

// maxBodyLimit bounds comparison.body-limit: the largest comparison with bodies this size
// still fits a Kafka record (schemas.MaxComparisonBody), and the aggregator accepts it.
const maxBodyLimit = schemas.MaxComparisonBody

// defaultGroup is the consumer group whose changelogs carry the plain topic names.
const defaultGroup = "understudy-joiner"

// changelogs returns the names of the joiner's changelog topics: the plain names for the
// default group, suffixed with ".<group>" for any other, so that joiner deployments with
// different groups never restore each other's state (as Kafka Streams prefixes changelogs with
// its application id).
func (c *Config) changelogs() (state, labels string) {
	if c.Group == defaultGroup {
		return schemas.TopicJoinerState, schemas.TopicJoinerLabels
	}
	return schemas.TopicJoinerState + "." + c.Group, schemas.TopicJoinerLabels + "." + c.Group
}
