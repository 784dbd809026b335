// Package webhook delivers notifications from a Postgres outbox as Standard Webhooks
// (https://www.standardwebhooks.com), signed as apiv1.Sign describes: webhook-id stable per
// message (for deduplication), webhook-timestamp of the attempt, one signature per secret (so
// a receiver keeps working while secrets rotate). Delivery is at least once, in the order the
// messages were queued: 5xx, 429, timeouts and network errors are retried with exponential
// backoff and full jitter; other 4xx answers fail the message for good; both are counted.
package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/understudy-ml/understudy/schemas/apiv1"
	"github.com/understudy-ml/understudy/services/platform/backoff"
	"github.com/understudy-ml/understudy/services/platform/logchange"
)

// Enqueue queues a message in the outbox inside the caller's transaction, so that it is
// stored if and only if what it announces is. A message with an id already queued is ignored.
func Enqueue(ctx context.Context, tx pgx.Tx, id string, payload []byte, at time.Time) error {
	if _, err := tx.Exec(ctx, `
		INSERT INTO webhook_outbox (id, payload, created_at, next_attempt) VALUES ($1, $2, $3, $3)
		ON CONFLICT (id) DO NOTHING`, id, payload, at); err != nil {
		return fmt.Errorf("queue webhook %s: %w", id, err)
	}
	return nil
}

// Sender delivers the outbox. Run it on one replica at a time (the aggregator runs it on the
// alert leader): two senders would each deliver every message (receivers deduplicate by id).
type Sender struct {
	cfg     Config
	secrets [][]byte  // signing keys, current first; none sends unsigned
	body    Formatter // nil sends payloads as is
	db      *pgxpool.Pool
	client  *http.Client
	logger  *slog.Logger
	now     func() time.Time

	attempts *prometheus.CounterVec
	pending  prometheus.Gauge
	warn     logchange.Warner
}

// Formatter turns a queued payload into a request body, for example a Slack-compatible one.
type Formatter func(payload []byte) ([]byte, error)

// NewSender wires a sender; body formats each payload (nil sends it as is). cfg must be
// valid.
func NewSender(cfg Config, body Formatter, db *pgxpool.Pool, logger *slog.Logger, reg prometheus.Registerer, now func() time.Time) (*Sender, error) {
	secrets, err := cfg.Secrets()
	if err != nil {
		return nil, err
	}
	f := promauto.With(reg)
	return &Sender{
		cfg: cfg, secrets: secrets, body: body, db: db, logger: logger, now: now,
		client: &http.Client{
			Timeout: cfg.Timeout,
			// A redirect is a failed delivery, never followed: following it would re-post the
			// signed body to wherever the receiver points (Classify makes a 3xx permanent).
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		attempts: f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_aggregator_webhook_attempts_total", Help: "Webhook delivery attempts by outcome (delivered, retry, failed, expired)."}, []string{"outcome"}),
		pending:  f.NewGauge(prometheus.GaugeOpts{Name: "understudy_aggregator_webhook_outbox_pending", Help: "Webhook messages queued and not yet delivered or failed."}),
	}, nil
}

// Run delivers until ctx ends.
func (s *Sender) Run(ctx context.Context) error {
	if s.cfg.URL == "" {
		<-ctx.Done()
		return nil
	}
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		if err := s.deliverDue(ctx); err != nil && ctx.Err() == nil {
			s.warn.Warn(s.logger, "webhook outbox", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

type message struct {
	id        string
	payload   []byte
	createdAt time.Time
	attempts  int
	next      time.Time
}

// deliverDue sends queued messages oldest first and stops at the first one that is not due or
// fails, so that a receiver sees messages in the order they were queued.
func (s *Sender) deliverDue(ctx context.Context) error {
	rows, err := s.db.Query(ctx, `
		SELECT id, payload, created_at, attempts, next_attempt FROM webhook_outbox
		WHERE delivered_at IS NULL AND failed_at IS NULL ORDER BY created_at, id LIMIT 100`)
	if err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	var ms []message
	var m message
	if _, err := pgx.ForEachRow(rows, []any{&m.id, &m.payload, &m.createdAt, &m.attempts, &m.next}, func() error {
		ms = append(ms, m)
		return nil
	}); err != nil {
		return fmt.Errorf("read outbox: %w", err)
	}
	s.pending.Set(float64(len(ms)))
	for _, m := range ms {
		now := s.now()
		if m.next.After(now) {
			return nil
		}
		if now.Sub(m.createdAt) > s.cfg.MaxAge {
			s.attempts.WithLabelValues("expired").Inc()
			if err := s.finish(ctx, m.id, "failed_at", "expired before delivery"); err != nil {
				return err
			}
			continue
		}
		err := s.post(ctx, m, now)
		switch {
		case err == nil:
			s.attempts.WithLabelValues("delivered").Inc()
			if err := s.finish(ctx, m.id, "delivered_at", ""); err != nil {
				return err
			}
		case errors.As(err, new(*PermanentError)):
			s.attempts.WithLabelValues("failed").Inc()
			s.logger.Warn("webhook refused for good", "webhook_id", m.id, "err", err)
			if err := s.finish(ctx, m.id, "failed_at", err.Error()); err != nil {
				return err
			}
		default:
			s.attempts.WithLabelValues("retry").Inc()
			delay := backoff.Delay(m.attempts, s.cfg.BackoffMin, s.cfg.BackoffMax, rand.Float64())
			if _, uerr := s.db.Exec(ctx, `UPDATE webhook_outbox SET attempts = attempts + 1, next_attempt = $2, last_error = $3 WHERE id = $1`,
				m.id, now.Add(delay), err.Error()); uerr != nil {
				return fmt.Errorf("reschedule webhook: %w", uerr)
			}
			return fmt.Errorf("webhook %s: %w (retry in %s)", m.id, err, delay.Round(time.Millisecond))
		}
	}
	return nil
}

func (s *Sender) finish(ctx context.Context, id, column, why string) error {
	if _, err := s.db.Exec(ctx, `UPDATE webhook_outbox SET attempts = attempts + 1, `+column+` = $2, last_error = $3 WHERE id = $1`, id, s.now(), why); err != nil {
		return fmt.Errorf("mark webhook %s: %w", id, err)
	}
	return nil
}

// RedactURL returns raw with everything but its scheme and host (and port) replaced by
// "…", for logs, errors and tables: webhook URLs often carry their secret in the path, the
// query or the user info.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "[webhook url]"
	}
	out := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		out += "/…"
	}
	return out
}

// PermanentError is a delivery failure that retrying cannot fix: a 4xx answer other than 429
// (Status), or a message that cannot be sent at all (Err, Status 0).
type PermanentError struct {
	Status int
	Err    error
}

func (e *PermanentError) Error() string {
	if e.Err != nil {
		return "cannot deliver: " + e.Err.Error()
	}
	if e.Status >= 300 && e.Status < 400 {
		return fmt.Sprintf("receiver answered %d %s (redirects are not followed)", e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("receiver answered %d %s", e.Status, http.StatusText(e.Status))
}

// Unwrap returns the cause of a message that cannot be sent, nil for a refusing receiver.
func (e *PermanentError) Unwrap() error { return e.Err }

// Classify maps a receiver's answer to nil (delivered), a *PermanentError, or a retryable
// error: 2xx delivered; 429 and 5xx retryable; other statuses permanent.
func Classify(status int) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case status == http.StatusTooManyRequests || status >= 500:
		return fmt.Errorf("receiver answered %d %s", status, http.StatusText(status))
	}
	return &PermanentError{Status: status}
}

func (s *Sender) post(ctx context.Context, m message, now time.Time) error {
	body := m.payload
	if s.body != nil {
		b, err := s.body(m.payload)
		if err != nil {
			return &PermanentError{Err: fmt.Errorf("format the payload: %w", err)}
		}
		body = b
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		// The parse error quotes the URL, which may hold the secret: name only its host.
		return &PermanentError{Err: fmt.Errorf("build a request for %s: invalid URL", RedactURL(s.cfg.URL))}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "understudy-aggregator")
	req.Header.Set(apiv1.HeaderID, m.id)
	req.Header.Set(apiv1.HeaderTimestamp, fmt.Sprint(now.Unix()))
	if len(s.secrets) > 0 {
		req.Header.Set(apiv1.HeaderSignature, apiv1.Sign(m.id, now, body, s.secrets))
	}
	resp, err := s.client.Do(req)
	if err != nil {
		// *url.Error quotes the whole URL, whose path or query often is the secret (Slack,
		// Teams): name only its scheme and host.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("post to %s: %w", RedactURL(s.cfg.URL), err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return Classify(resp.StatusCode)
}

// Prune deletes messages delivered or failed before before, and returns how many went.
// Undelivered messages are never pruned (they expire through MaxAge first).
func Prune(ctx context.Context, db *pgxpool.Pool, before time.Time) (int64, error) {
	tag, err := db.Exec(ctx, `DELETE FROM webhook_outbox WHERE coalesce(delivered_at, failed_at) < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune webhook outbox: %w", err)
	}
	return tag.RowsAffected(), nil
}
