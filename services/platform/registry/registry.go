// Package registry switches a service's codecs to the Confluent wire format when a schema
// registry is configured: it registers the current schema of each topic under the subject
// "<topic>-value" (TopicNameStrategy) and lets decoders resolve unknown ids. Without a
// registry URL it does nothing and the codecs keep Avro single-object encoding.
package registry

import (
	"context"
	"flag"
	"fmt"
	"net/url"

	"github.com/twmb/franz-go/pkg/sr"
	"github.com/understudy-ml/understudy/schemas"
)

// Config holds the registry location.
type Config struct {
	URL string // empty: no registry, single-object encoding
}

// RegisterFlags registers schema-registry.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "schema-registry.url", c.URL, "Confluent-compatible schema registry; when set, values use the Confluent wire format")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	if c.URL == "" {
		return nil
	}
	if u, err := url.Parse(c.URL); err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("schema-registry.url: %q is not an absolute URL", c.URL)
	}
	return nil
}

// Subject returns the registry subject of a topic's values.
func Subject(topic string) string { return topic + "-value" }

// Configure registers the current schemas and switches every codec in cs to the Confluent
// wire format. It calls the registry, so services call it from Run, not New.
func Configure(ctx context.Context, c Config, cs *schemas.Codecs) error {
	if c.URL == "" {
		return nil
	}
	cl, err := sr.NewClient(sr.URLs(c.URL))
	if err != nil {
		return fmt.Errorf("schema registry client: %w", err)
	}
	resolve := func(ctx context.Context, id int) (string, error) {
		s, err := cl.SchemaByID(ctx, id)
		return s.Schema, err
	}
	if err := use(ctx, cl, schemas.TopicInference, cs.Inference, resolve); err != nil {
		return err
	}
	if err := use(ctx, cl, schemas.TopicShadow, cs.Shadow, resolve); err != nil {
		return err
	}
	if err := use(ctx, cl, schemas.TopicLabels, cs.Label, resolve); err != nil {
		return err
	}
	return use(ctx, cl, schemas.TopicComparisons, cs.Comparison, resolve)
}

func use[T any](ctx context.Context, cl *sr.Client, topic string, c *schemas.Codec[T], resolve schemas.SchemaResolver) error {
	ss, err := cl.CreateSchema(ctx, Subject(topic), sr.Schema{Schema: c.Schema(), Type: sr.TypeAvro})
	if err != nil {
		return fmt.Errorf("register schema for %s: %w", topic, err)
	}
	c.UseConfluentID(ss.ID, resolve)
	return nil
}
