// Package topics creates Understudy's topics and checks that topics joined together are
// co-partitioned. It owns topic layout, not what flows through the topics.
package topics

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/understudy-ml/understudy/schemas"
)

// ErrPartitionMismatch means topics that must be co-partitioned have different partition counts.
var ErrPartitionMismatch = errors.New("topics are not co-partitioned")

// ErrMissing means a required topic does not exist.
var ErrMissing = errors.New("topic does not exist")

// Config describes how topics are created.
type Config struct {
	Partitions          int
	ReplicationFactor   int
	Retention           time.Duration // retention.ms of data topics; <= 0 keeps the broker default
	DeadLetterRetention time.Duration
	LabelStateRetention time.Duration // retention.ms of the joiner's label-state changelog
}

// NewDefaultConfig returns defaults suited to a single-node development cluster.
func NewDefaultConfig() Config {
	return Config{Partitions: 8, ReplicationFactor: 1, Retention: 7 * 24 * time.Hour, DeadLetterRetention: 30 * 24 * time.Hour, LabelStateRetention: 8 * 24 * time.Hour}
}

// RegisterFlags registers topics.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.Partitions, "topics.partitions", c.Partitions, "partitions of every topic (all topics must match)")
	fs.IntVar(&c.ReplicationFactor, "topics.replication-factor", c.ReplicationFactor, "replication factor of every topic")
	fs.DurationVar(&c.Retention, "topics.retention", c.Retention, "retention of data topics (0: broker default)")
	fs.DurationVar(&c.DeadLetterRetention, "topics.dead-letter-retention", c.DeadLetterRetention, "retention of the dead-letter topic (0: broker default)")
	fs.DurationVar(&c.LabelStateRetention, "topics.label-state-retention", c.LabelStateRetention, "retention of the joiner's label-state changelog; keep it above the longest label window (0: broker default)")
}

// Validate reports every problem with the config.
func (c *Config) Validate() error {
	var errs []error
	if c.Partitions < 1 {
		errs = append(errs, errors.New("topics.partitions: must be at least 1"))
	}
	if c.ReplicationFactor < 1 {
		errs = append(errs, errors.New("topics.replication-factor: must be at least 1"))
	}
	return errors.Join(errs...)
}

// Spec is one topic to ensure.
type Spec struct {
	Name      string
	Retention time.Duration // ignored for compacted topics
	Compact   bool          // cleanup.policy=compact: keep the latest value per key
}

// Result says what Ensure did with one topic.
type Result struct {
	Name       string
	Created    bool
	Partitions int
}

// Ensure creates every topic in specs that does not exist yet, with c's partitions, replication
// and the spec's retention. It is idempotent: existing topics are left as they are. It returns
// ErrPartitionMismatch (wrapped) when any topic, new or existing, has a partition count other
// than c.Partitions, because Understudy joins topics partition by partition.
func Ensure(ctx context.Context, cl *kgo.Client, c Config, specs []Spec) ([]Result, error) {
	adm := kadm.NewClient(cl)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	existing, err := partitionCounts(ctx, cl, names)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, s := range specs {
		if n, ok := existing[s.Name]; ok {
			results = append(results, Result{Name: s.Name, Partitions: n})
			continue
		}
		configs := map[string]*string{}
		if s.Compact {
			compact := "compact"
			configs["cleanup.policy"] = &compact
		} else if s.Retention > 0 {
			ms := strconv.FormatInt(s.Retention.Milliseconds(), 10)
			configs["retention.ms"] = &ms
		}
		resp, err := adm.CreateTopic(ctx, int32(c.Partitions), int16(c.ReplicationFactor), configs, s.Name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return results, fmt.Errorf("create topic %s: %w", s.Name, err)
		}
		results = append(results, Result{Name: s.Name, Created: err == nil, Partitions: c.Partitions})
	}
	// Brokers publish new topics to metadata asynchronously: wait until every topic is
	// visible, then check the real partition counts rather than the requested ones.
	counts, err := waitVisible(ctx, cl, names)
	if err != nil {
		return results, err
	}
	for i := range results {
		results[i].Partitions = counts[results[i].Name]
	}
	return results, checkCounts(counts, c.Partitions)
}

func waitVisible(ctx context.Context, cl *kgo.Client, names []string) (map[string]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		counts, err := partitionCounts(ctx, cl, names)
		if err == nil && len(counts) == len(names) {
			return counts, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("topics not visible in metadata: %w", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// CheckCoPartitioned returns ErrMissing or ErrPartitionMismatch (wrapped, with every count in
// the message) unless all topics exist with the same partition count; it returns that count.
func CheckCoPartitioned(ctx context.Context, cl *kgo.Client, topics ...string) (int, error) {
	counts, err := partitionCounts(ctx, cl, topics)
	if err != nil {
		return 0, err
	}
	var missing []string
	for _, t := range topics {
		if _, ok := counts[t]; !ok {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return 0, fmt.Errorf("%w: %s (create them with `understudy topics create`)", ErrMissing, strings.Join(missing, ", "))
	}
	want := counts[topics[0]]
	return want, checkCounts(counts, want)
}

// partitionCounts asks a broker directly (bypassing the client's metadata cache, which keeps
// "unknown topic" answers for a while) for the partition counts of the named topics. Topics
// that do not exist are absent from the result.
func partitionCounts(ctx context.Context, cl *kgo.Client, names []string) (map[string]int, error) {
	req := kmsg.NewPtrMetadataRequest()
	for _, n := range names {
		t := kmsg.NewMetadataRequestTopic()
		t.Topic = kmsg.StringPtr(n)
		req.Topics = append(req.Topics, t)
	}
	resp, err := req.RequestWith(ctx, cl)
	if err != nil {
		return nil, fmt.Errorf("metadata request: %w", err)
	}
	counts := map[string]int{}
	for _, t := range resp.Topics {
		if t.Topic != nil && t.ErrorCode == 0 && len(t.Partitions) > 0 {
			counts[*t.Topic] = len(t.Partitions)
		}
	}
	return counts, nil
}

func checkCounts(counts map[string]int, want int) error {
	var bad []string
	for name, n := range counts {
		if n != want {
			bad = append(bad, name)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	all := make([]string, 0, len(counts))
	for name, n := range counts {
		all = append(all, fmt.Sprintf("%s=%d", name, n))
	}
	sort.Strings(all)
	return fmt.Errorf("%w: partition counts %s; every joined topic needs the same count or records of one request land on different partitions", ErrPartitionMismatch, strings.Join(all, ", "))
}

// Understudy returns the specs of every Understudy topic under c: data topics with c.Retention,
// the dead-letter topic with c.DeadLetterRetention, the joiner's compacted state changelog and
// its label-state changelog with c.LabelStateRetention.
func Understudy(c Config) []Spec {
	return []Spec{
		{Name: schemas.TopicInference, Retention: c.Retention},
		{Name: schemas.TopicShadow, Retention: c.Retention},
		{Name: schemas.TopicLabels, Retention: c.Retention},
		{Name: schemas.TopicComparisons, Retention: c.Retention},
		{Name: schemas.TopicDeadLetter, Retention: c.DeadLetterRetention},
		{Name: schemas.TopicJoinerState, Compact: true},
		{Name: schemas.TopicJoinerLabels, Retention: c.LabelStateRetention},
	}
}
