// Package consume runs the poll loop and the transaction tail shared by Understudy's
// consumers: poll, report fetch errors, hand the batch to the service, allow rebalancing only
// between batches; and, for consume-transform-produce services, produce a batch's output and
// commit it together with its input offsets. Plain clients used with Loop must be built with
// kgo.BlockRebalanceOnPoll, so partitions are never revoked while a batch is being handled;
// a kgo.GroupTransactSession guards its own batches.
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

// Poller is what Loop consumes from: a *kgo.Client or a *kgo.GroupTransactSession.
type Poller interface {
	PollRecords(ctx context.Context, maxPollRecords int) kgo.Fetches
	AllowRebalance()
}

// Handler processes one batch. It must finish its side effects (produce, commit) before it
// returns; an error stops Loop. ctx is not cancelled when Loop's ctx is, so a batch in
// progress at shutdown completes, but it is cancelled Options.Drain after that.
type Handler func(ctx context.Context, fs kgo.Fetches) error

// Options tune Loop. The zero value polls without a record limit and hands over only
// non-empty batches.
type Options struct {
	// MaxRecords bounds a batch; 0 means whatever one poll returns.
	MaxRecords int
	// Tick, when positive, bounds every poll and hands every poll's result to the handler,
	// empty or not, so that work driven by time (timeouts, flow control, rebalances applied
	// between batches) runs at least that often while nothing arrives.
	Tick time.Duration
	// Drain is how long the batch in progress when ctx ends may take (see drainContext).
	Drain time.Duration
}

// idlePause is how long Loop waits after a poll that returned only (retriable) errors, so it
// does not spin while the client retries them.
const idlePause = 100 * time.Millisecond

// Loop polls p until ctx ends or handle fails. Fetch errors are logged once per change of
// error and retried by the client; an error that means this member can never consume again
// (see fatalError) ends the loop with that error; a closed client ends it with nil.
func Loop(ctx context.Context, p Poller, logger *slog.Logger, opts Options, handle Handler) error {
	var warn logchange.Warner
	for {
		pctx, cancel := ctx, context.CancelFunc(func() {})
		if opts.Tick > 0 {
			pctx, cancel = context.WithTimeout(ctx, opts.Tick)
		}
		fs := p.PollRecords(pctx, opts.MaxRecords)
		cancel()
		if ctx.Err() != nil || fs.IsClientClosed() {
			p.AllowRebalance()
			return nil
		}
		var fatal error
		errs := 0
		fs.EachError(func(topic string, partition int32, err error) {
			if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
				return // the end of a tick or of the loop, not a fetch problem
			}
			errs++
			if f := fatalError(err); f != nil {
				fatal = f
			}
			warn.Warn(logger, "fetch error", err, "topic", topic, "partition", partition)
		})
		if fatal != nil {
			p.AllowRebalance()
			return fatal
		}
		if !fs.Empty() || opts.Tick > 0 {
			hctx, cancel := drainContext(ctx, opts.Drain)
			err := handle(hctx, fs)
			cancel()
			if err != nil {
				p.AllowRebalance()
				return fmt.Errorf("handle batch: %w", err)
			}
		} else if errs > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(idlePause):
			}
		}
		p.AllowRebalance()
	}
}

// drainContext returns a context for work that must outlive ctx a little: it is not cancelled
// when ctx is, but drain after ctx ends, so the batch in progress at shutdown finishes or
// fails within a deadline instead of holding shutdown forever. Call cancel when the work is
// done.
func drainContext(ctx context.Context, drain time.Duration) (context.Context, context.CancelFunc) {
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

// fatalError returns ErrInstanceFenced (wrapping err) when a fetch or group error means this member
// cannot make progress again, and nil for errors the client retries by itself.
func fatalError(err error) error {
	if errors.Is(err, kerr.FencedInstanceID) {
		return fmt.Errorf("%w: %w", ErrInstanceFenced, err)
	}
	return nil
}
