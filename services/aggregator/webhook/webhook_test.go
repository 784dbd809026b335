package webhook_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/understudy-ml/understudy/services/aggregator/internal/pgtest"
	"github.com/understudy-ml/understudy/services/aggregator/webhook"
	"github.com/understudy-ml/understudy/services/platform/backoff"
)

// The reference vector published with the Standard Webhooks specification.
const (
	vectorSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

func key(t *testing.T, s string) []byte {
	t.Helper()
	k, err := apiv1.ParseSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestClassifyAndBackoff(t *testing.T) {
	for status, want := range map[int]string{200: "ok", 204: "ok", 429: "retry", 500: "retry", 503: "retry", 400: "permanent", 401: "permanent", 404: "permanent", 410: "permanent"} {
		err := webhook.Classify(status)
		got := "retry"
		switch {
		case err == nil:
			got = "ok"
		case errors.As(err, new(*webhook.PermanentError)):
			got = "permanent"
		}
		if got != want {
			t.Errorf("status %d: %s, want %s", status, got, want)
		}
	}
	for attempt := range 40 {
		for _, u := range []float64{0, 0.5, 0.999} {
			d := backoff.Delay(attempt, time.Second, time.Minute, u)
			ceil := min(time.Second<<min(attempt, 20), time.Minute)
			if d < 500*time.Millisecond || d > ceil {
				t.Fatalf("attempt %d u %v: %s outside [0.5s, %s]", attempt, u, d, ceil)
			}
		}
	}
}

// TestSenderRetriesInOrderAndStopsOn4xx: a receiver that fails with 500 and 429 gets each
// message again until it answers 200, in queue order, signed; a 400 fails the message for good
// and delivery moves on.
func TestSenderRetriesInOrderAndStopsOn4xx(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	k := key(t, vectorSecret)
	var (
		mu       sync.Mutex
		answers  = []int{500, 429, 500, 200, 400, 200}
		received []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := apiv1.Verify(r.Header, body, [][]byte{k}, time.Minute, time.Now()); err != nil {
			t.Errorf("receiver: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		code := 200
		if len(answers) > 0 {
			code, answers = answers[0], answers[1:]
		}
		received = append(received, r.Header.Get(apiv1.HeaderID)+":"+http.StatusText(code))
		w.WriteHeader(code)
	}))
	defer srv.Close()
	now := time.Now()
	for i, id := range []string{"msg_a", "msg_b", "msg_c"} {
		if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			return webhook.Enqueue(ctx, tx, id, []byte(`{"n":1}`), now.Add(time.Duration(i)*time.Millisecond))
		}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := webhook.NewSender(webhook.Config{
		URL: srv.URL, Secret: vectorSecret, Format: webhook.FormatStandard, Timeout: time.Second, BackoffMin: 10 * time.Millisecond,
		BackoffMax: 40 * time.Millisecond, MaxAge: time.Hour, Poll: 5 * time.Millisecond,
	}, nil, db, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- s.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var open int
		if err := db.QueryRow(ctx, `SELECT count(*) FROM webhook_outbox WHERE delivered_at IS NULL AND failed_at IS NULL`).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages still queued; received %v", open, received)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{"msg_a:Internal Server Error", "msg_a:Too Many Requests", "msg_a:Internal Server Error", "msg_a:OK", "msg_b:Bad Request", "msg_c:OK"}
	mu.Lock()
	defer mu.Unlock()
	if len(received) != len(want) {
		t.Fatalf("received %v, want %v", received, want)
	}
	for i := range want {
		if received[i] != want[i] {
			t.Fatalf("received %v, want %v", received, want)
		}
	}
	var failed string
	if err := db.QueryRow(ctx, `SELECT id FROM webhook_outbox WHERE failed_at IS NOT NULL`).Scan(&failed); err != nil || failed != "msg_b" {
		t.Fatalf("failed message %q %v", failed, err)
	}
	// Finished messages are pruned once old enough; none is yet.
	if n, err := webhook.Prune(ctx, db, now.Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("pruned %d %v", n, err)
	}
	if n, err := webhook.Prune(ctx, db, time.Now().Add(time.Hour)); err != nil || n != 3 {
		t.Fatalf("pruned %d, want 3: %v", n, err)
	}
}

// TestSecretURLsAndRedirects: a receiver that times out, whose URL carries its secret in path
// and query, leaves the secret in no log, error or table; a 302 is a failed delivery, and the
// redirect's target receives nothing.
func TestSecretURLsAndRedirects(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	var elsewhere atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { elsewhere.Add(1) }))
	defer target.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/slow") {
			time.Sleep(300 * time.Millisecond)
			return
		}
		http.Redirect(w, r, target.URL+"/steal", http.StatusFound)
	}))
	defer srv.Close()
	const secret = "T000-B000-XXXXsecretXXXX"
	for _, tc := range []struct{ name, url string }{
		{"timeout", srv.URL + "/slow/services/" + secret + "?token=" + secret},
		{"redirect", srv.URL + "/hook/" + secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := db.Exec(ctx, `DELETE FROM webhook_outbox`); err != nil {
				t.Fatal(err)
			}
			if err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
				return webhook.Enqueue(ctx, tx, "msg_"+tc.name, []byte(`{"n":1}`), time.Now())
			}); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			var mu sync.Mutex
			logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return logs.Write(p) }), nil))
			s, err := webhook.NewSender(webhook.Config{
				URL: tc.url, Format: webhook.FormatStandard, Timeout: 50 * time.Millisecond, BackoffMin: 10 * time.Millisecond,
				BackoffMax: 20 * time.Millisecond, MaxAge: time.Hour, Poll: 5 * time.Millisecond,
			}, nil, db, logger, prometheus.NewRegistry(), time.Now)
			if err != nil {
				t.Fatal(err)
			}
			rctx, cancel := context.WithCancel(ctx)
			done := make(chan error)
			go func() { done <- s.Run(rctx) }()
			deadline := time.Now().Add(5 * time.Second)
			var lastError string
			var failed bool
			for {
				if err := db.QueryRow(ctx, `SELECT coalesce(last_error, ''), failed_at IS NOT NULL FROM webhook_outbox`).Scan(&lastError, &failed); err != nil {
					t.Fatal(err)
				}
				if (tc.name == "timeout" && lastError != "") || failed || time.Now().After(deadline) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // a few more attempts and their logs
			cancel()
			if err := <-done; err != nil {
				t.Errorf("sender: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if lastError == "" {
				t.Fatal("no delivery error recorded")
			}
			if strings.Contains(lastError, secret) || strings.Contains(logs.String(), secret) {
				t.Errorf("the secret leaked:\nlast_error: %s\nlogs: %s", lastError, logs.String())
			}
			if tc.name == "redirect" && (!failed || elsewhere.Load() != 0) {
				t.Errorf("redirect: failed=%v, target got %d posts (last_error %q)", failed, elsewhere.Load(), lastError)
			}
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestPermanentErrorWrapsItsCause: a message that cannot be sent keeps its cause for errors.Is
// and names it; a refusing receiver's error names the status.
func TestPermanentErrorWrapsItsCause(t *testing.T) {
	cause := errors.New("payload is not JSON")
	err := error(&webhook.PermanentError{Err: cause})
	if !errors.Is(err, cause) || !strings.Contains(err.Error(), "payload is not JSON") {
		t.Fatalf("%v does not wrap its cause", err)
	}
	if err := webhook.Classify(404); !strings.Contains(err.Error(), "404") || errors.Unwrap(err) != nil {
		t.Fatalf("404: %v", err)
	}
}
