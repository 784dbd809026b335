// Package consume runs the poll loop shared by Understudy's consumers: poll, report fetch
// errors, hand the batch to the service, allow rebalancing only between batches. Clients used
// with it must be built with kgo.BlockRebalanceOnPoll, so partitions are never revoked while a
// batch is being handled.
package consume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/services/platform/logchange"
)

// Handler processes one batch. It must finish its side effects (produce, commit) before it
// returns; an error stops Loop. ctx is not cancelled when Loop's ctx is, so a batch in
// progress at shutdown completes, but it is cancelled Loop's drain after that.
type Handler func(ctx context.Context, fs kgo.Fetches) error

// Loop polls cl until ctx ends or handle fails, handing every non-empty batch to handle.
// Fetch errors are logged once per change of error and retried by the client; a closed client
// ends the loop. A batch in progress when ctx ends may take drain longer (see DrainContext).
func Loop(ctx context.Context, cl *kgo.Client, logger *slog.Logger, drain time.Duration, handle Handler) error {
	var warn logchange.Warner
	for {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			cl.AllowRebalance()
			return nil
		}
		if fs.IsClientClosed() {
			return nil
		}
		var fatal error
		fs.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			if f := Fatal(err); f != nil {
				fatal = f
			}
			warn.Warn(logger, "fetch error", err, "topic", topic, "partition", partition)
		})
		if fatal != nil {
			cl.AllowRebalance()
			return fatal
		}
		if !fs.Empty() {
			hctx, cancel := DrainContext(ctx, drain)
			err := handle(hctx, fs)
			cancel()
			if err != nil {
				cl.AllowRebalance()
				return fmt.Errorf("handle batch: %w", err)
			}
		}
		cl.AllowRebalance()
	}
}

// DrainContext returns a context for work that must outlive ctx a little: it is not cancelled
// when ctx is, but drain after ctx ends, so the batch in progress at shutdown finishes or
// fails within a deadline instead of holding shutdown forever. Call cancel when the work is
// done.
func DrainContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(drain, cancel)
		context.AfterFunc(dctx, func() { t.Stop() })
	})
	return dctx, func() { stop(); cancel() }
}

// ErrInstanceFenced: another member of the group joined with this member's static instance
// id; this one can never consume again and must stop rather than idle while looking ready.
var ErrInstanceFenced = errors.New("fenced: another consumer joined the group with this instance id")

// Fatal returns ErrInstanceFenced (wrapping err) when a fetch or group error means this member
// cannot make progress again, and nil for errors the client retries by itself.
func Fatal(err error) error {
	if errors.Is(err, kerr.FencedInstanceID) {
		return fmt.Errorf("%w: %w", ErrInstanceFenced, err)
	}
	return nil
}
