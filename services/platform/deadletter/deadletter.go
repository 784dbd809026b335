// Package deadletter publishes records a service cannot process to the dead-letter topic,
// following the convention in package schemas: original key and value untouched, the reason,
// error and source coordinates in headers. It owns counting those records by reason.
package deadletter

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

// Reasons for dead-lettering; the reason header carries one of these.
const (
	ReasonDecode  = "decode"  // the value did not decode with any known schema
	ReasonInvalid = "invalid" // it decoded but breaks a contract (e.g. empty request id)
	// ReasonTooLarge marks a record whose output could not be produced because the broker
	// refused it as too large; the copy is cut to schemas.DeadLetterMaxValue bytes.
	ReasonTooLarge = "too_large"
)

// Producer is the part of a Kafka client Publisher needs.
type Producer interface {
	ProduceSync(ctx context.Context, rs ...*kgo.Record) kgo.ProduceResults
}

// Publisher sends rejected records to the dead-letter topic.
type Publisher struct {
	service string
	topic   string
	prod    Producer
	sent    *prometheus.CounterVec
	failed  prometheus.Counter
}

// New returns a Publisher for service that produces with prod and registers its metrics
// (understudy_deadletter_records_total{reason}, understudy_deadletter_publish_failures_total) in reg.
func New(service string, prod Producer, reg prometheus.Registerer) *Publisher {
	f := promauto.With(reg)
	return &Publisher{
		service: service,
		topic:   schemas.TopicDeadLetter,
		prod:    prod,
		sent: f.NewCounterVec(prometheus.CounterOpts{
			Name: "understudy_deadletter_records_total",
			Help: "Records sent to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		failed: f.NewCounter(prometheus.CounterOpts{
			Name: "understudy_deadletter_publish_failures_total",
			Help: "Dead-letter produce attempts that failed (the caller retries or stops).",
		}),
	}
}

// Record returns the dead-letter copy of src. The error text goes in a header; it must not
// contain payload contents. The copy is bounded (schemas.DeadLetterMaxValue and its
// siblings), so a record too large to forward can still be dead-lettered.
func Record(service string, src *kgo.Record, reason string, cause error) *kgo.Record {
	msg := ""
	if cause != nil {
		msg = strings.ToValidUTF8(cause.Error(), "\uFFFD")
		if len(msg) > schemas.DeadLetterMaxError {
			msg = strings.ToValidUTF8(msg[:schemas.DeadLetterMaxError], "") + "…"
		}
	}
	key, value := src.Key, src.Value
	if len(key) > schemas.DeadLetterMaxKey {
		key = key[:schemas.DeadLetterMaxKey]
	}
	var headers []kgo.RecordHeader
	size := 0
	for _, h := range src.Headers {
		size += len(h.Key) + len(h.Value)
	}
	if size <= schemas.DeadLetterMaxHeaders {
		headers = append(headers, src.Headers...)
	}
	headers = append(headers,
		kgo.RecordHeader{Key: schemas.HeaderDLQReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: schemas.HeaderDLQError, Value: []byte(msg)},
		kgo.RecordHeader{Key: schemas.HeaderDLQSourceTopic, Value: []byte(src.Topic)},
		kgo.RecordHeader{Key: schemas.HeaderDLQSourcePartition, Value: []byte(strconv.FormatInt(int64(src.Partition), 10))},
		kgo.RecordHeader{Key: schemas.HeaderDLQSourceOffset, Value: []byte(strconv.FormatInt(src.Offset, 10))},
		kgo.RecordHeader{Key: schemas.HeaderDLQService, Value: []byte(service)},
	)
	if len(value) > schemas.DeadLetterMaxValue {
		headers = append(headers, kgo.RecordHeader{Key: schemas.HeaderDLQOriginalSize, Value: []byte(strconv.Itoa(len(value)))})
		value = value[:schemas.DeadLetterMaxValue]
	}
	return &kgo.Record{Topic: schemas.TopicDeadLetter, Key: key, Value: value, Headers: headers}
}

// Count counts one dead letter by reason, for callers that produce Record themselves (for
// example inside a transaction).
func (p *Publisher) Count(reason string) { p.sent.WithLabelValues(reason).Inc() }

// Publish synchronously produces the dead-letter copy of src and counts it by reason. It
// returns an error when the produce failed, so the caller does not commit past src.
func (p *Publisher) Publish(ctx context.Context, src *kgo.Record, reason string, cause error) error {
	if err := p.prod.ProduceSync(ctx, Record(p.service, src, reason, cause)).FirstErr(); err != nil {
		p.failed.Inc()
		return fmt.Errorf("publish dead letter for %s/%d@%d: %w", src.Topic, src.Partition, src.Offset, err)
	}
	p.sent.WithLabelValues(reason).Inc()
	return nil
}
