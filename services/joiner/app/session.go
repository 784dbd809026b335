package app

// The joiner's Kafka session: building it, preparing it (topics checked, a crashed
// predecessor fenced), noting rebalances, and replacing it after a failure.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
	"github.com/understudy-ml/understudy/services/platform/backoff"
	"github.com/understudy-ml/understudy/services/platform/topics"
)

// newSession creates the transactional consumer-producer session, without topics: it joins
// the group when consume adds them, after the topics are checked and the producer fenced.
func (j *Joiner) newSession() (*kgo.GroupTransactSession, error) {
	return kgo.NewGroupTransactSession(append(j.cfg.Kafka.Opts(),
		kgo.ConsumerGroup(j.cfg.Group),
		kgo.InstanceID("understudy-joiner-"+j.cfg.InstanceID),
		kgo.Balancers(kgo.RangeBalancer()),
		kgo.TransactionalID("understudy-joiner-"+j.cfg.InstanceID),
		kgo.TransactionTimeout(30*time.Second),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxBytes(4<<20),
		kgo.OnPartitionsAssigned(j.onAssigned),
		kgo.OnPartitionsRevoked(j.onRevoked),
		kgo.OnPartitionsLost(j.onRevoked),
		kgo.DefaultProduceTopic(schemas.TopicComparisons),
	)...)
}

// client returns the current session's client (the session is replaced after a failure).
func (j *Joiner) client() *kgo.Client {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.sess.Client()
}

// recover replaces a broken session: franz-go's clients cannot be reused after a failed
// transaction end, so the joiner closes it, forgets its in-memory state (restored again from
// the changelogs when partitions are assigned) and starts a new session with the same
// transactional id, which fences and aborts whatever the old one left open.
func (j *Joiner) recover(ctx context.Context, cause error) error {
	j.logger.Warn("kafka session failed; starting a new one", "err", cause)
	j.failures.Inc()
	j.sess.Close()
	j.state = newJoinState(j.state.policy)
	clear(j.owned)
	j.paused, j.flow = map[string]bool{}, newFlow()
	if j.labels != nil {
		j.labels.drain(ctx)
		j.labels.reset()
	}
	j.mu.Lock()
	clear(j.assigned)
	clear(j.revoked)
	j.mu.Unlock()
	retry := backoff.Retry{Min: time.Second, Max: 30 * time.Second}
	for {
		sess, err := j.newSession()
		if err == nil {
			if _, _, err = sess.Client().ProducerID(ctx); err == nil {
				j.mu.Lock()
				j.sess = sess
				j.mu.Unlock()
				j.consume()
				return nil
			}
			sess.Close()
		}
		j.logger.Warn("new kafka session failed; retrying", "err", err)
		if !retry.Wait(ctx) {
			return ctx.Err()
		}
	}
}

func (j *Joiner) onAssigned(_ context.Context, _ *kgo.Client, assigned map[string][]int32) {
	j.note(assigned, true)
}

func (j *Joiner) onRevoked(_ context.Context, _ *kgo.Client, revoked map[string][]int32) {
	j.note(revoked, false)
}

// note records assigned (or revoked) partitions for the loop to act on; a partition is in at
// most one of the two sets, the latest event winning.
func (j *Joiner) note(parts map[string][]int32, assigned bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	set, unset := j.revoked, j.assigned
	if assigned {
		set, unset = j.assigned, j.revoked
	}
	for _, ps := range parts {
		for _, p := range ps {
			set[p] = true
			delete(unset, p)
		}
	}
}

// prepare migrates the label store, checks (and creates) topics and fences a crashed
// predecessor's transaction. Unreachable Kafka or Postgres is waited for, with backoff; inputs
// that are missing or not co-partitioned make the joiner refuse to start.
func (j *Joiner) prepare(ctx context.Context) (int, error) {
	retry := backoff.Retry{Min: time.Second, Max: 30 * time.Second}
	for {
		n, err := j.prepareOnce(ctx)
		switch {
		case err == nil:
			return n, nil
		case ctx.Err() != nil:
			return 0, nil
		case errors.Is(err, topics.ErrPartitionMismatch) || errors.Is(err, topics.ErrMissing) || errors.Is(err, labelstore.ErrBucketMismatch):
			return 0, fmt.Errorf("joiner refuses to start: %w", err)
		}
		j.logger.Warn("joiner not ready to start; retrying", "err", err)
		if !retry.Wait(ctx) {
			return 0, nil
		}
	}
}

func (j *Joiner) prepareOnce(ctx context.Context) (int, error) {
	if j.labels != nil {
		if err := j.labels.store.Migrate(ctx); err != nil {
			return 0, fmt.Errorf("label store: %w", err)
		}
	}
	n, err := j.checkTopics(ctx)
	if err != nil {
		return 0, err
	}
	// Fence a crashed predecessor now (aborting its open transaction) rather than after the
	// broker's transaction timeout.
	if _, _, err := j.sess.Client().ProducerID(ctx); err != nil {
		return 0, fmt.Errorf("init transactional producer: %w", err)
	}
	return n, nil
}

// checkTopics checks that the inputs are co-partitioned, creates missing changelogs with the
// inputs' partition count, and checks the changelogs too.
func (j *Joiner) checkTopics(ctx context.Context) (int, error) {
	n, err := topics.CheckCoPartitioned(ctx, j.sess.Client(), j.inputs...)
	if err != nil {
		return 0, err
	}
	tc := topics.NewDefaultConfig()
	tc.Partitions = n
	specs := []topics.Spec{{Name: j.stateTopic, Compact: true}}
	if j.labels != nil {
		// Keep the label changelog at least as long as the label state it rebuilds.
		keep := max(tc.LabelStateRetention, j.state.policy.maxLabelWindow()+2*j.cfg.LabelBucket)
		specs = append(specs, topics.Spec{Name: j.labelsTopic, Retention: keep})
	}
	if _, err := topics.Ensure(ctx, j.sess.Client(), tc, specs); err != nil {
		return 0, fmt.Errorf("changelog topics: %w", err)
	}
	all := append([]string{j.stateTopic}, j.inputs...)
	if j.labels != nil {
		all = append(all, j.labelsTopic)
	}
	return topics.CheckCoPartitioned(ctx, j.sess.Client(), all...)
}

// consume makes the current session join the group and consume the inputs.
func (j *Joiner) consume() { j.client().AddConsumeTopics(j.inputs...) }
