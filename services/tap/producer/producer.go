// Package producer publishes InferenceEvents to Kafka with the same encoding, keys and
// guarantees as the tap, for teams that produce events from their own serving code instead of
// putting the tap in front of their model.
//
// Guarantees: Publish never blocks and never returns an error for Kafka trouble. An event is
// handed to the Kafka client with TryProduce into a bounded buffer, keyed by its request id
// (murmur2, like every Understudy topic) and encoded with Avro single-object encoding (or the
// Confluent wire format when a schema registry is configured). When Kafka does not
// acknowledge it within the delivery timeout, or the buffer is full, the event goes to a
// bounded on-disk spool, replayed oldest first once Kafka answers again. Only when the spool is
// full, disabled, or cannot keep up is an event dropped, and then it is counted in
// understudy_events_not_captured_total{reason}. Delivery is therefore at-least-once for
// spooled events (a replay interrupted by a crash may repeat a batch) and at-most-once beyond
// the spool limit; downstream consumers drop duplicates by request id.
package producer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/logchange"
)

// Reasons an event was not captured (label of understudy_events_not_captured_total). The
// tap adds its own: sampled_out, too_large, redaction_failed.
const (
	ReasonBufferFull       = "buffer_full"       // in-memory buffers full and the spool queue too
	ReasonKafkaUnavailable = "kafka_unavailable" // Kafka did not take it and the spool is full or off
	ReasonEncode           = "encode_failed"     // the event could not be encoded
)

// Config configures a Producer.
type Config struct {
	Kafka           kafka.Config
	BufferRecords   int           // records buffered in memory for Kafka
	DeliveryTimeout time.Duration // how long a record waits for Kafka before it is spooled
	Linger          time.Duration // how long a partition's batch waits for more events
	SpoolDir        string        // on-disk spool; empty disables it
	SpoolMaxBytes   int64         // spool size limit
}

// NewDefaultConfig returns defaults with the spool disabled.
func NewDefaultConfig() Config {
	return Config{
		Kafka:           kafka.NewDefaultConfig("producer"),
		BufferRecords:   10000,
		DeliveryTimeout: 5 * time.Second,
		Linger:          100 * time.Millisecond,
		SpoolMaxBytes:   1 << 30,
	}
}

// RegisterFlags registers capture.* flags (the Kafka flags are registered by the owner).
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.IntVar(&c.BufferRecords, "capture.buffer-records", c.BufferRecords, "events buffered in memory for Kafka")
	fs.DurationVar(&c.DeliveryTimeout, "capture.delivery-timeout", c.DeliveryTimeout, "how long an event waits for Kafka before it goes to the spool")
	fs.DurationVar(&c.Linger, "capture.linger", c.Linger, "how long a partition's batch waits for more events before it is sent: longer means fewer, larger produce requests and less CPU on the tap and the brokers")
	fs.StringVar(&c.SpoolDir, "capture.spool-dir", c.SpoolDir, "directory of the on-disk spool used while Kafka is unreachable (empty: no spool)")
	fs.Int64Var(&c.SpoolMaxBytes, "capture.spool-max-bytes", c.SpoolMaxBytes, "size limit of the spool; beyond it events are dropped and counted")
}

// Validate reports every problem.
func (c *Config) Validate() error {
	var errs []error
	if c.BufferRecords < 1 {
		errs = append(errs, errors.New("capture.buffer-records: must be at least 1"))
	}
	if c.DeliveryTimeout < time.Second {
		errs = append(errs, errors.New("capture.delivery-timeout: must be at least 1s (the Kafka client's minimum)"))
	}
	if c.Linger < 0 || c.Linger > time.Second {
		errs = append(errs, errors.New("capture.linger: must be between 0 and 1s"))
	}
	if c.SpoolDir != "" && c.SpoolMaxBytes < 1<<20 {
		errs = append(errs, errors.New("capture.spool-max-bytes: must be at least 1 MiB"))
	}
	return errors.Join(errs...)
}

// Producer publishes events. Create it with New, run its spool replayer with Run, and Close it.
type Producer struct {
	cfg     Config
	logger  *slog.Logger
	client  *kgo.Client
	codec   *schemas.Codec[schemas.InferenceEvent]
	spool   *spool
	spoolCh chan entry

	produced    prometheus.Counter
	notCaptured *prometheus.CounterVec
	spooled     prometheus.Counter
	replayed    prometheus.Counter
	latency     prometheus.Histogram
}

// New returns a producer. It creates the Kafka client (which connects lazily) and opens the
// spool directory, replaying whatever an earlier process left there once Run starts.
func New(cfg Config, codec *schemas.Codec[schemas.InferenceEvent], logger *slog.Logger, reg prometheus.Registerer) (*Producer, error) {
	if err := errors.Join(cfg.Kafka.Validate(), cfg.Validate()); err != nil {
		return nil, fmt.Errorf("invalid producer config: %w", err)
	}
	p := &Producer{cfg: cfg, logger: logger, codec: codec}
	if cfg.SpoolDir != "" {
		s, err := openSpool(cfg.SpoolDir, cfg.SpoolMaxBytes)
		if err != nil {
			return nil, err
		}
		p.spool = s
		p.spoolCh = make(chan entry, 8192)
	}
	cl, err := kgo.NewClient(append(cfg.Kafka.Opts(),
		kgo.DefaultProduceTopic(schemas.TopicInference),
		kgo.MaxBufferedRecords(cfg.BufferRecords),
		kgo.RecordDeliveryTimeout(cfg.DeliveryTimeout),
		kgo.ProducerLinger(cfg.Linger), // fewer, larger batches: events are not latency-critical
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	p.client = cl
	f := promauto.With(reg)
	p.produced = f.NewCounter(prometheus.CounterOpts{Name: "understudy_events_produced_total", Help: "Inference events acknowledged by Kafka (live or replayed from the spool)."})
	p.notCaptured = f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_events_not_captured_total", Help: "Requests or events that did not reach Kafka, by reason."}, []string{"reason"})
	p.spooled = f.NewCounter(prometheus.CounterOpts{Name: "understudy_events_spooled_total", Help: "Events written to the on-disk spool."})
	p.replayed = f.NewCounter(prometheus.CounterOpts{Name: "understudy_events_replayed_total", Help: "Spooled events delivered to Kafka."})
	p.latency = f.NewHistogram(prometheus.HistogramOpts{Name: "understudy_events_produce_latency_seconds", Help: "Time from Publish to Kafka's acknowledgement.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)})
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "understudy_events_buffered", Help: "Events buffered in memory for Kafka."}, func() float64 { return float64(cl.BufferedProduceRecords()) })
	f.NewGaugeFunc(prometheus.GaugeOpts{Name: "understudy_events_spool_bytes", Help: "Bytes in the on-disk spool."}, func() float64 {
		if p.spool == nil {
			return 0
		}
		return float64(p.spool.Bytes())
	})
	return p, nil
}

// Client returns the Kafka client (for readiness checks).
func (p *Producer) Client() *kgo.Client { return p.client }

// Ready reports whether a broker answers.
func (p *Producer) Ready(ctx context.Context) error { return kafka.Ping(ctx, p.client) }

// NotCaptured counts one request that yields no event, by reason.
func (p *Producer) NotCaptured(reason string) { p.notCaptured.WithLabelValues(reason).Inc() }

// Publish hands ev to Kafka without blocking. It returns an error only when ev cannot be
// encoded; every other outcome is accounted for in the metrics.
func (p *Producer) Publish(ev schemas.InferenceEvent) error {
	value, err := p.codec.Encode(nil, ev)
	if err != nil {
		p.NotCaptured(ReasonEncode)
		return fmt.Errorf("encode event %s: %w", ev.RequestID, err)
	}
	start := time.Now()
	p.client.TryProduce(context.Background(), &kgo.Record{Key: []byte(ev.RequestID), Value: value}, func(r *kgo.Record, err error) {
		if err == nil {
			p.produced.Inc()
			p.latency.Observe(time.Since(start).Seconds())
			return
		}
		p.toSpool(r, err)
	})
	return nil
}

// toSpool runs in the client's callback: it must not block, so it only queues for the spool
// writer goroutine.
func (p *Producer) toSpool(r *kgo.Record, cause error) {
	if p.spool == nil {
		if errors.Is(cause, kgo.ErrMaxBuffered) {
			p.NotCaptured(ReasonBufferFull)
		} else {
			p.NotCaptured(ReasonKafkaUnavailable)
		}
		return
	}
	select {
	case p.spoolCh <- entry{key: r.Key, value: r.Value}:
	default:
		p.NotCaptured(ReasonBufferFull)
	}
}

// Run writes spooled events to disk and replays the spool whenever Kafka answers, until ctx
// ends. It returns nil on cancel. Without a spool it only waits for ctx.
func (p *Producer) Run(ctx context.Context) error {
	if p.spool == nil {
		<-ctx.Done()
		return nil
	}
	replayDone := make(chan struct{})
	go func() {
		defer close(replayDone)
		p.replayLoop(ctx)
	}()
	flush := time.NewTicker(100 * time.Millisecond)
	defer flush.Stop()
	for {
		select {
		case e := <-p.spoolCh:
			p.write(e)
		case <-flush.C:
			if err := p.spool.Flush(); err != nil {
				p.logger.Warn("spool flush failed", "err", err)
			}
		case <-ctx.Done():
			<-replayDone
			return nil
		}
	}
}

func (p *Producer) write(e entry) {
	if err := p.spool.Append(e); err != nil {
		p.NotCaptured(ReasonKafkaUnavailable)
		return
	}
	p.spooled.Inc()
}

// replayLoop delivers sealed spool segments when Kafka answers.
func (p *Producer) replayLoop(ctx context.Context) {
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	var warn logchange.Warner
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if p.spool.Bytes() == 0 {
			continue
		}
		if err := p.replayOnce(ctx); err != nil {
			warn.Warn(p.logger, "spool replay paused", err, "spool_bytes", p.spool.Bytes())
			continue
		}
		warn.Clear()
	}
}

func (p *Producer) replayOnce(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	err := p.Ready(pctx)
	cancel()
	if err != nil {
		return err
	}
	if err := p.spool.seal(); err != nil {
		return err
	}
	segs, err := p.spool.sealed()
	if err != nil {
		return err
	}
	for _, seq := range segs {
		n, err := p.spool.replay(seq, 500, func(es []entry) error {
			recs := make([]*kgo.Record, len(es))
			for i, e := range es {
				recs[i] = &kgo.Record{Key: e.key, Value: e.value}
			}
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			return p.client.ProduceSync(sctx, recs...).FirstErr()
		})
		p.replayed.Add(float64(n))
		p.produced.Add(float64(n))
		if err != nil {
			return fmt.Errorf("replay spool segment %d: %w", seq, err)
		}
	}
	return nil
}

// Close flushes buffered events within ctx (events Kafka does not take by then go to the
// spool when there is one), then closes the spool and the client.
func (p *Producer) Close(ctx context.Context) error {
	err := p.client.Flush(ctx)
	p.client.Close()
	if p.spool != nil {
		for {
			select {
			case e := <-p.spoolCh:
				p.write(e)
				continue
			default:
			}
			break
		}
		if cerr := p.spool.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
