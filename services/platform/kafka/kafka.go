// Package kafka turns user-facing Kafka settings into franz-go options. It owns the client
// defaults every Understudy service shares (Java-compatible key partitioning, bounded buffers)
// and nothing about what a service produces or consumes.
package kafka

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config holds the settings every Kafka client of a service shares.
type Config struct {
	Brokers        string        // comma-separated seed brokers
	ClientID       string        // Kafka client id; defaults to the service name
	DialTimeout    time.Duration // per connection attempt
	RequestTimeout time.Duration // extra time allowed on top of a request's own timeout
	Compression    string        // codec of produced batches: lz4, zstd, snappy, gzip or none
}

// compressions maps kafka.compression values to codecs.
var compressions = map[string]kgo.CompressionCodec{
	"lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression(), "snappy": kgo.SnappyCompression(),
	"gzip": kgo.GzipCompression(), "none": kgo.NoCompression(),
}

// NewDefaultConfig returns defaults for a local broker.
func NewDefaultConfig(service string) Config {
	return Config{
		Brokers:        "127.0.0.1:9092",
		ClientID:       "understudy-" + service,
		DialTimeout:    5 * time.Second,
		RequestTimeout: 10 * time.Second,
		Compression:    "lz4",
	}
}

// RegisterFlags registers the config's flags as kafka.*.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Brokers, "kafka.brokers", c.Brokers, "comma-separated Kafka seed brokers")
	fs.StringVar(&c.ClientID, "kafka.client-id", c.ClientID, "Kafka client id")
	fs.DurationVar(&c.DialTimeout, "kafka.dial-timeout", c.DialTimeout, "timeout of one broker connection attempt")
	fs.DurationVar(&c.RequestTimeout, "kafka.request-timeout", c.RequestTimeout, "time allowed on top of each request's own timeout")
	fs.StringVar(&c.Compression, "kafka.compression", c.Compression, "compression of produced batches: lz4, zstd, snappy, gzip or none (none spares the client's and the broker's CPU for more network and disk)")
}

// Validate reports every problem with the config.
func (c *Config) Validate() error {
	var errs []error
	if len(c.SeedBrokers()) == 0 {
		errs = append(errs, errors.New("kafka.brokers: at least one broker is required"))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, errors.New("kafka.dial-timeout: must be positive"))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, errors.New("kafka.request-timeout: must be positive"))
	}
	if _, ok := compressions[c.Compression]; !ok {
		errs = append(errs, fmt.Errorf("kafka.compression: %q is not one of lz4, zstd, snappy, gzip, none", c.Compression))
	}
	return errors.Join(errs...)
}

// SeedBrokers returns the trimmed, non-empty broker addresses.
func (c *Config) SeedBrokers() []string {
	var out []string
	for _, b := range strings.Split(c.Brokers, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Opts returns the client options of this config. Keyed records are partitioned with Kafka's
// murmur2 hash exactly like the Java client and Kafka Streams (StickyKeyPartitioner with the
// default KafkaHasher), so every topic keyed by request id is co-partitioned with the others
// and with topics written by Java producers.
func (c *Config) Opts() []kgo.Opt {
	return []kgo.Opt{
		kgo.SeedBrokers(c.SeedBrokers()...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(c.DialTimeout),
		kgo.RequestTimeoutOverhead(c.RequestTimeout),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
		kgo.ProducerBatchCompression(c.codec(), kgo.NoCompression()),
	}
}

// codec returns the configured codec; lz4 when the name is unknown (Validate reports it).
func (c *Config) codec() kgo.CompressionCodec {
	if codec, ok := compressions[c.Compression]; ok {
		return codec
	}
	return kgo.Lz4Compression()
}

// Ping reports whether a broker answers a metadata request within ctx.
func Ping(ctx context.Context, cl *kgo.Client) error {
	if err := cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka ping: %w", err)
	}
	return nil
}
