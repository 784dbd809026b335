package consume

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrAborted marks a batch whose transaction was aborted: none of its output is visible to
// read_committed consumers and its input is consumed again. The error wrapping it carries the
// cause.
var ErrAborted = errors.New("transaction aborted")

// errRefused is the cause of an abort when the batch itself succeeded but the commit was not
// allowed (the group rebalanced, or a produce of the transaction failed in the background).
var errRefused = errors.New("the commit was refused (the group rebalanced or a produce failed)")

// Transact runs one batch as one transaction of sess: it begins the transaction, calls build
// for the batch's output, produces it and commits it together with the offsets of the records
// polled so far. When build or the produce fails, or the broker refuses the commit, the
// transaction is aborted and Transact returns an error wrapping ErrAborted (and the cause);
// the session rewinds to the last committed offsets, so the caller must roll back whatever
// in-memory state the batch changed. Any other error means the transaction could not be
// ended: the session is unusable and must be replaced. ctx bounds the produce and the end.
func Transact(ctx context.Context, sess *kgo.GroupTransactSession, build func() ([]*kgo.Record, error)) error {
	if err := sess.Begin(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	recs, cause := build()
	if cause == nil {
		if err := sess.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			cause = fmt.Errorf("produce: %w", err)
		}
	}
	commit := kgo.TryCommit
	if cause != nil {
		commit = kgo.TryAbort
	}
	committed, err := sess.End(ctx, commit)
	switch {
	case err != nil:
		return fmt.Errorf("end transaction: %w", err)
	case committed:
		return nil
	case cause == nil:
		cause = errRefused
	}
	return fmt.Errorf("%w: %w", ErrAborted, cause)
}
