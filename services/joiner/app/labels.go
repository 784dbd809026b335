package app

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/joiner/internal/labelstore"
	"github.com/understudy-ml/understudy/services/platform/backoff"
	"github.com/understudy-ml/understudy/services/platform/pgerr"
	"github.com/understudy-ml/understudy/services/platform/progress"
)

// Label outcomes counted by understudy_joiner_labels_total.
const (
	labelReceived = "received" // a valid label was read
	labelMatched  = "matched"  // a labeled comparison was committed
	labelLate     = "late"     // it came after the label window
	labelOrphaned = "orphaned" // its predictions never came within the label window
)

type readyKey struct {
	partition int32
	id        string
}

// labelJoin is the label side of the joiner: long-lived state in Postgres (labelstore), kept
// as a materialized view of the label-state changelog that the joiner writes in its
// transactions. Requests whose prediction and label are both known are ready: their labeled
// comparison is emitted in the next transaction, with a matched marker. It is used by the
// joiner's loop goroutine only.
type labelJoin struct {
	store    *labelstore.Store
	progress *progress.Tracker // told when entries wait and when they are applied; may be nil
	policy   *policy
	bucket   time.Duration
	ready    map[readyKey]labelstore.Ready
	taken    []readyKey     // emitted in the open transaction
	late     map[string]int // late verdicts of the open transaction, by experiment

	// Committed entries are applied to Postgres by one background goroutine, in commit
	// order, while the loop goes on with the next transactions; what it finds ready is
	// handed back through found.
	queue   chan []labelstore.Entry
	applied sync.WaitGroup // entries queued and not yet applied
	mu      sync.Mutex
	found   []labelstore.Ready

	labels    *prometheus.CounterVec
	unlabeled prometheus.Counter
	readyG    prometheus.Gauge
	rows      *prometheus.GaugeVec
	applyDur  prometheus.Histogram
	rejected  prometheus.Counter
}

func newLabelJoin(store *labelstore.Store, p *policy, bucket time.Duration, reg prometheus.Registerer) *labelJoin {
	f := promauto.With(reg)
	l := &labelJoin{
		store: store, policy: p, bucket: bucket, ready: map[readyKey]labelstore.Ready{}, late: map[string]int{},
		queue:     make(chan []labelstore.Entry, 4),
		labels:    f.NewCounterVec(prometheus.CounterOpts{Name: "understudy_joiner_labels_total", Help: "Labels by experiment (as the label or its comparison names it) and outcome: received, matched (labeled comparison committed), late (after the label window) and orphaned (no predictions within the window)."}, []string{"experiment", "outcome"}),
		unlabeled: f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_predictions_unlabeled_total", Help: "Final comparisons that left the label window without a label."}),
		readyG:    f.NewGauge(prometheus.GaugeOpts{Name: "understudy_joiner_labels_ready", Help: "Requests with prediction and label known whose labeled comparison is not committed yet."}),
		rows:      f.NewGaugeVec(prometheus.GaugeOpts{Name: "understudy_joiner_label_state_rows", Help: "Estimated rows of the label state in Postgres, by table."}, []string{"table"}),
		rejected:  f.NewCounter(prometheus.CounterOpts{Name: "understudy_joiner_label_entries_rejected_total", Help: "Label-state changes Postgres refused for their data, left out one by one so the rest could be applied."}),
		applyDur:  f.NewHistogram(prometheus.HistogramOpts{Name: "understudy_joiner_label_apply_seconds", Help: "Time to apply one transaction's label-state changes to Postgres.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	return l
}

// cutoff is the retention horizon at now: buckets that end before it are dropped.
func (l *labelJoin) cutoff(now time.Time) time.Time {
	return now.Add(-l.policy.maxLabelWindow() - l.bucket)
}

// onLabel returns the changelog record that stores a label, or nil when the label is already
// too old to meet any prediction (counted late).
func (l *labelJoin) onLabel(topic string, raw []byte, lab schemas.LabelEvent, now time.Time) *kgo.Record {
	l.labels.WithLabelValues(lab.Experiment, labelReceived).Inc()
	if lab.EventTime.Before(l.cutoff(now)) {
		l.labels.WithLabelValues(lab.Experiment, labelLate).Inc()
		return nil
	}
	return stateRecord(topic, labelstore.KindLabel, lab.RequestID, lab.EventTime, raw, lab.Experiment)
}

// take returns the labeled comparisons of the ready requests of owned partitions and the
// matched markers the transaction writes with them; late ones get a marker only.
func (l *labelJoin) take(topic string, codecs *schemas.Codecs, now time.Time, limit int) (out []schemas.Comparison, recs []*kgo.Record) {
	keys := make([]readyKey, 0, min(len(l.ready), limit))
	for k := range l.ready {
		if len(keys) == limit {
			break // the rest in the next transactions
		}
		keys = append(keys, k)
	}
	ctx := context.Background()
	for _, k := range keys {
		r := l.ready[k]
		l.taken = append(l.taken, k)
		cmp, cerr := codecs.Comparison.Decode(ctx, r.Comparison)
		lab, lerr := codecs.Label.Decode(ctx, r.Label)
		if cerr == nil && lerr == nil && lab.EventTime.Sub(cmp.EventTime) <= l.policy.of(cmp.Experiment).labelWindow {
			cmp.Label = &schemas.LabelValue{Value: lab.Value, EventTime: lab.EventTime, Source: lab.Source}
			cmp.EmittedAt = now
			out = append(out, cmp)
		} else {
			// Late, or state that no longer decodes (never expected: it was written by us):
			// either way the request is settled without a labeled comparison.
			l.late[cmp.Experiment]++
		}
		recs = append(recs, stateRecord(topic, labelstore.KindMatched, k.id, cmp.EventTime, nil, ""))
	}
	return out, recs
}

// committed forgets the ready requests the committed transaction settled and counts them.
func (l *labelJoin) committed(labeled []schemas.Comparison) {
	for _, k := range l.taken {
		delete(l.ready, k)
	}
	l.taken = l.taken[:0]
	for _, c := range labeled {
		l.labels.WithLabelValues(c.Experiment, labelMatched).Inc()
	}
	for exp, n := range l.late {
		l.labels.WithLabelValues(exp, labelLate).Add(float64(n))
	}
	clear(l.late)
	l.readyG.Set(float64(len(l.ready)))
}

// aborted keeps the ready requests for the next transaction.
func (l *labelJoin) aborted() {
	l.taken = l.taken[:0]
	clear(l.late)
}

// apply writes committed label-state records to Postgres, retrying until it succeeds or ctx
// ends: the changelog already holds them, so skipping one would diverge the state. A joiner
// that stops before applying re-applies from the stored offsets when it starts.
func (l *labelJoin) apply(ctx context.Context, entries []labelstore.Entry, onErr func(error)) ([]labelstore.Ready, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	start := time.Now()
	retry := backoff.Retry{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		ready, skipped, err := l.store.Apply(ctx, entries, l.cutoff(time.Now()))
		if pgerr.IsData(err) {
			ready, skipped, err = l.applyEach(ctx, entries, onErr)
		}
		if err == nil {
			if l.progress != nil {
				l.progress.Done()
			}
			l.applyDur.Observe(time.Since(start).Seconds())
			l.unlabeled.Add(float64(skipped)) // too old to meet a label (or already late)
			return ready, nil
		}
		onErr(err)
		if !retry.Wait(ctx) {
			return nil, ctx.Err()
		}
	}
}

// applyEach applies entries one at a time after Postgres refused them together for their data,
// and leaves out (counting them) those it refuses alone: one bad value must not stop the label
// join of a partition for good. (The edge checks in schemas.Limits should make this rare.)
func (l *labelJoin) applyEach(ctx context.Context, entries []labelstore.Entry, onErr func(error)) ([]labelstore.Ready, int, error) {
	var (
		ready   []labelstore.Ready
		skipped int
	)
	for _, e := range entries {
		r, s, err := l.store.Apply(ctx, []labelstore.Entry{e}, l.cutoff(time.Now()))
		if pgerr.IsData(err) {
			l.rejected.Inc()
			onErr(fmt.Errorf("label-state change at changelog partition %d offset %d left out: %w", e.Partition, e.Offset, err))
			continue
		}
		if err != nil {
			return nil, 0, err
		}
		ready, skipped = append(ready, r...), skipped+s
	}
	return ready, skipped, nil
}

// submit queues committed entries for the background applier; it blocks while the queue is
// full (Postgres slower than Kafka: the joiner slows down rather than buffering).
func (l *labelJoin) submit(ctx context.Context, entries []labelstore.Entry) {
	if len(entries) == 0 {
		return
	}
	l.applied.Add(1)
	if l.progress != nil {
		l.progress.Begin()
	}
	select {
	case l.queue <- entries:
	case <-ctx.Done():
		l.applied.Done()
	}
}

// runApplier applies queued entries until ctx ends, and drops expired buckets every retain
// interval in between (never concurrently with an apply: dropping a partition while writing
// to its parent table deadlocks). Entries left unapplied are re-applied from the changelog at
// the next start.
func (l *labelJoin) runApplier(ctx context.Context, retain time.Duration, now func() time.Time, onErr, onRetainErr func(error)) {
	tick := time.NewTicker(retain)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := l.retain(ctx, now()); err != nil && ctx.Err() == nil {
				onRetainErr(err)
			}
		case entries := <-l.queue:
			ready, err := l.apply(ctx, entries, onErr)
			if err == nil {
				l.mu.Lock()
				l.found = append(l.found, ready...)
				l.mu.Unlock()
			}
			l.applied.Done()
		}
	}
}

// reset forgets the ready requests and what the applier found (after a session failure: the
// store's ready queue has them all).
func (l *labelJoin) reset() {
	clear(l.ready)
	l.taken = l.taken[:0]
	clear(l.late)
	l.mu.Lock()
	l.found = nil
	l.mu.Unlock()
}

// drain waits until every queued entry is applied, or ctx ends.
func (l *labelJoin) drain(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		l.applied.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// collect moves what the applier found ready into the ready set (owned partitions only).
func (l *labelJoin) collect(owned func(int32) bool) {
	l.mu.Lock()
	found := l.found
	l.found = nil
	l.mu.Unlock()
	l.add(found, owned)
}

// add queues ready requests of owned partitions.
func (l *labelJoin) add(ready []labelstore.Ready, owned func(int32) bool) {
	for _, r := range ready {
		if owned(r.Partition) {
			l.ready[readyKey{r.Partition, r.RequestID}] = r
		}
	}
	l.readyG.Set(float64(len(l.ready)))
}

// drop forgets the ready requests of a partition this member no longer owns; its next owner
// finds them in the store's ready queue.
func (l *labelJoin) drop(p int32) {
	for k := range l.ready {
		if k.partition == p {
			delete(l.ready, k)
		}
	}
}

// retain drops expired buckets and counts orphaned labels and unlabeled predictions.
func (l *labelJoin) retain(ctx context.Context, now time.Time) error {
	res, err := l.store.Retain(ctx, l.cutoff(now))
	if err != nil {
		return err
	}
	for exp, n := range res.Orphaned {
		l.labels.WithLabelValues(exp, labelOrphaned).Add(float64(n))
	}
	l.unlabeled.Add(float64(res.Unlabeled))
	rows, err := l.store.Rows(ctx)
	if err != nil {
		return err
	}
	for table, n := range rows {
		l.rows.WithLabelValues(table).Set(float64(n))
	}
	return nil
}
