// Package app is the invoker: it consumes inference events, calls the shadow model with the
// same request and publishes one ShadowResult per event.
//
// Delivery: at-least-once. Offsets are committed only after the results of a whole batch are
// acknowledged by Kafka, so a crash repeats shadow calls and may publish a result twice (the
// joiner drops duplicates); shadows must therefore be free of side effects. A shadow's
// slowness or failure only becomes a result with an error kind; it never stops the invoker.
// Undecodable events go to the dead-letter topic. Replicas share the consumer group.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"golang.org/x/sync/errgroup"
)

// HeaderShadow marks shadow traffic so the shadow's own telemetry can tell it apart.
const HeaderShadow = "X-Understudy-Shadow"

// Error kinds of shadow results.
const (
	KindTimeout     = "timeout"
	KindConnect     = "connect"
	KindHTTPStatus  = "http_status"
	KindBadResponse = "bad_response"
)

// Invoker calls one shadow for every captured request. Create it with New, start it with Run.
type Invoker struct {
	cfg     Config
	logger  *slog.Logger
	now     func() time.Time
	client  *kgo.Client
	http    *http.Client
	codecs  *schemas.Codecs
	extract predict.Extractor
	target  *url.URL
	dlq     *deadletter.Publisher
	ops     *server.Server

	calls   *prometheus.CounterVec
	latency prometheus.Histogram
	skipped *prometheus.CounterVec
}

// New wires an invoker; it does not touch the network.
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Invoker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	cl, err := kgo.NewClient(append(cfg.Kafka.Opts(),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(schemas.TopicInference),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.DefaultProduceTopic(schemas.TopicShadow),
		kgo.ProducerLinger(2*time.Millisecond),
	)...)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	target, _ := url.Parse(cfg.ShadowURL)
	extract, _ := predict.Parse(cfg.Protocol)
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = cfg.Concurrency
	f := promauto.With(reg)
	inv := &Invoker{
		cfg: cfg, logger: logger, now: time.Now, client: cl, codecs: codecs, extract: extract, target: target,
		http:    &http.Client{Transport: transport, Timeout: cfg.Timeout},
		dlq:     deadletter.New("invoker", cl, reg),
		ops:     server.New(cfg.Ops, logger, reg),
		calls:   f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_calls_total", Help: "Shadow calls by shadow and outcome (ok or error kind)."}, []string{"shadow", "outcome"}),
		latency: f.NewHistogram(prometheus.HistogramOpts{Name: "understudy_invoker_call_latency_seconds", Help: "Shadow call latency.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		skipped: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_invoker_events_skipped_total", Help: "Inference events not shadowed, by reason."}, []string{"reason"}),
	}
	inv.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, cl) })
	return inv, nil
}

// Ops returns the operational server.
func (inv *Invoker) Ops() *server.Server { return inv.ops }

// Run consumes until ctx ends, finishes the batch in progress, commits and leaves the group.
func (inv *Invoker) Run(ctx context.Context) error {
	defer inv.client.Close()
	if err := registry.Configure(ctx, inv.cfg.Registry, inv.codecs); err != nil {
		return err
	}
	inv.logger.Info("invoker starting", "group", inv.cfg.Group, "shadow", inv.cfg.ShadowName, "shadow_url", inv.cfg.ShadowURL)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return inv.ops.Run(gctx) })
	g.Go(func() error { return consume.Loop(gctx, inv.client, inv.logger, 0, inv.handle) })
	return g.Wait()
}

func (inv *Invoker) handle(ctx context.Context, fs kgo.Fetches) error {
	recs := fs.Records()
	out := make([]*kgo.Record, len(recs))
	sem := make(chan struct{}, inv.cfg.Concurrency)
	var wg sync.WaitGroup
	for i, r := range recs {
		ev, err := inv.codecs.Inference.Decode(ctx, r.Value)
		if err != nil {
			if err := inv.dlq.Publish(ctx, r, deadletter.ReasonDecode, err); err != nil {
				return err
			}
			continue
		}
		if inv.cfg.Experiment != "" && ev.Experiment != inv.cfg.Experiment {
			inv.skipped.WithLabelValues("other_experiment").Inc()
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res := inv.call(ctx, ev)
			value, err := inv.codecs.Shadow.Encode(nil, res)
			if err != nil {
				inv.skipped.WithLabelValues("encode_failed").Inc()
				return
			}
			out[i] = &kgo.Record{Key: r.Key, Value: value}
		})
	}
	wg.Wait()
	var produce []*kgo.Record
	for _, r := range out {
		if r != nil {
			produce = append(produce, r)
		}
	}
	if err := inv.client.ProduceSync(ctx, produce...).FirstErr(); err != nil {
		return fmt.Errorf("produce shadow results: %w", err)
	}
	if err := inv.client.CommitRecords(ctx, recs...); err != nil {
		return fmt.Errorf("commit offsets: %w", err)
	}
	return nil
}

// call replays ev against the shadow and describes the outcome; it never returns an error.
func (inv *Invoker) call(ctx context.Context, ev schemas.InferenceEvent) schemas.ShadowResult {
	res := schemas.ShadowResult{
		RequestID: ev.RequestID, Experiment: ev.Experiment, Tenant: ev.Tenant,
		Shadow: inv.cfg.ShadowName, Role: inv.cfg.ShadowRole,
		Model:     schemas.ModelRef{Name: inv.cfg.ShadowModel, Version: inv.cfg.ShadowVersion},
		EventTime: ev.EventTime, CalledAt: inv.now(),
	}
	u := *inv.target
	if u.Path == "" || u.Path == "/" {
		u.Path = ev.Request.Path
	}
	method := ev.Request.Method
	if method == "" {
		method = http.MethodPost
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(ev.Request.Body))
	if err != nil {
		res.Error = &schemas.Error{Kind: KindConnect, Message: err.Error()}
		return res
	}
	for k, v := range ev.Request.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set(HeaderShadow, "1")
	req.Header.Set("X-Request-Id", ev.RequestID)
	start := time.Now()
	resp, err := inv.http.Do(req)
	if err != nil {
		res.Latency = time.Since(start)
		res.Error = classify(err)
		inv.observe(res)
		return res
	}
	body, readErr := io.ReadAll(io.LimitReader(resp.Body, int64(inv.cfg.ResponseMaxBytes)+1))
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	res.Latency = time.Since(start)
	res.Response = schemas.HTTPResponse{Status: int32(resp.StatusCode), ContentType: resp.Header.Get("Content-Type"), OriginalSize: int64(len(body))}
	res.Response.Truncated = len(body) > inv.cfg.ResponseMaxBytes
	res.Response.Body = body[:min(len(body), inv.cfg.ResponseMaxBytes)]
	switch {
	case readErr != nil:
		res.Error = classify(readErr)
	case resp.StatusCode >= 300:
		res.Error = &schemas.Error{Kind: KindHTTPStatus, Message: resp.Status}
	case !res.Response.Truncated:
		p, err := inv.extract.Extract(res.Response.Body)
		if err != nil {
			res.Error = &schemas.Error{Kind: KindBadResponse, Message: err.Error()}
		}
		res.Response.Prediction = p
	}
	inv.observe(res)
	return res
}

func (inv *Invoker) observe(res schemas.ShadowResult) {
	outcome := "ok"
	if res.Error != nil {
		outcome = res.Error.Kind
	}
	inv.calls.WithLabelValues(res.Shadow, outcome).Inc()
	inv.latency.Observe(res.Latency.Seconds())
}

// classify maps a transport error to a result error kind.
func classify(err error) *schemas.Error {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return &schemas.Error{Kind: KindTimeout, Message: err.Error()}
	}
	return &schemas.Error{Kind: KindConnect, Message: strings.TrimSpace(err.Error())}
}
