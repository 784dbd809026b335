package consume

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/servicetest"
)

func TestMain(m *testing.M) { servicetest.VerifyNoLeaks(m) }

// The test broker creates Understudy's topics; these tests use two of them as input and output.
const (
	topicIn  = schemas.TopicInference
	topicOut = schemas.TopicShadow
)

var quiet = slog.New(slog.DiscardHandler)

// produce writes n records to topic and returns once they are acknowledged.
func produce(t *testing.T, brokers string, topic string, n int) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.DefaultProduceTopic(topic))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for i := range n {
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
}

// readCommitted counts the committed records of topic.
func readCommitted(t *testing.T, brokers, topic string) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	n := 0
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fs := cl.PollFetches(ctx)
		cancel()
		if fs.NumRecords() == 0 {
			return n
		}
		n += fs.NumRecords()
	}
}

func groupClient(t *testing.T, brokers, group string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{
		kgo.SeedBrokers(brokers), kgo.ConsumerGroup(group), kgo.ConsumeTopics(topicIn),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.BlockRebalanceOnPoll(),
	}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestLoopBatches: every record reaches the handler once, in batches no larger than
// MaxRecords; a handler error ends the loop wrapped; the end of ctx ends it with nil.
func TestLoopBatches(t *testing.T) {
	brokers := servicetest.Broker(t, 1)
	produce(t, brokers, topicIn, 25)
	cl := groupClient(t, brokers, "loop-batches")

	stop := errors.New("enough")
	seen, largest := 0, 0
	err := Loop(context.Background(), cl, quiet, Options{MaxRecords: 10}, func(_ context.Context, fs kgo.Fetches) error {
		if fs.Empty() {
			t.Error("an empty batch reached the handler without Tick")
		}
		seen += fs.NumRecords()
		largest = max(largest, fs.NumRecords())
		if seen >= 25 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Loop returned %v, want the handler's error", err)
	}
	if seen != 25 || largest > 10 {
		t.Fatalf("handled %d records in batches of up to %d, want 25 in batches of up to 10", seen, largest)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := Loop(ctx, cl, quiet, Options{}, func(context.Context, kgo.Fetches) error { return nil }); err != nil {
		t.Fatalf("Loop at the end of its context returned %v, want nil", err)
	}
}

// TestLoopTick: with Tick, the handler runs while nothing arrives.
func TestLoopTick(t *testing.T) {
	brokers := servicetest.Broker(t, 1)
	cl := groupClient(t, brokers, "loop-tick")
	ticks := 0
	err := Loop(context.Background(), cl, quiet, Options{Tick: 20 * time.Millisecond}, func(_ context.Context, fs kgo.Fetches) error {
		if !fs.Empty() {
			t.Error("a record arrived on an empty topic")
		}
		if ticks++; ticks == 3 {
			return io.EOF
		}
		return nil
	})
	if !errors.Is(err, io.EOF) || ticks != 3 {
		t.Fatalf("Loop returned %v after %d ticks, want io.EOF after 3", err, ticks)
	}
}

// TestLoopDrain: the handler's context outlives the loop's by Drain, so a batch in progress
// at shutdown can finish.
func TestLoopDrain(t *testing.T) {
	brokers := servicetest.Broker(t, 1)
	produce(t, brokers, topicIn, 1)
	cl := groupClient(t, brokers, "loop-drain")
	ctx, cancel := context.WithCancel(context.Background())
	var afterStop error
	err := Loop(ctx, cl, quiet, Options{Drain: time.Minute}, func(hctx context.Context, _ kgo.Fetches) error {
		cancel()
		time.Sleep(20 * time.Millisecond)
		afterStop = hctx.Err()
		return nil
	})
	if err != nil || afterStop != nil {
		t.Fatalf("Loop returned %v; the handler's context after shutdown: %v; want nil and nil", err, afterStop)
	}
}

// TestTransact: a committed batch's output is visible and its input is not consumed again;
// an aborted one's output is never visible, its input is consumed again, and the error
// carries the cause and ErrAborted.
func TestTransact(t *testing.T) {
	brokers := servicetest.Broker(t, 1)
	produce(t, brokers, topicIn, 5)
	newSession := func() *kgo.GroupTransactSession {
		sess, err := kgo.NewGroupTransactSession(kgo.SeedBrokers(brokers), kgo.ConsumerGroup("transact"), kgo.ConsumeTopics(topicIn),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.TransactionalID("consume-test"),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.DefaultProduceTopic(topicOut))
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	poll := func(sess *kgo.GroupTransactSession) kgo.Fetches {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return sess.PollFetches(ctx)
	}
	out := func(fs kgo.Fetches) []*kgo.Record {
		var recs []*kgo.Record
		fs.EachRecord(func(r *kgo.Record) { recs = append(recs, &kgo.Record{Key: r.Key, Value: r.Value}) })
		return recs
	}

	sess := newSession()
	fs := poll(sess)
	if fs.NumRecords() != 5 {
		t.Fatalf("polled %d records, want 5", fs.NumRecords())
	}
	bad := errors.New("cannot encode")
	err := Transact(context.Background(), sess, func() ([]*kgo.Record, error) { return out(fs), bad })
	if !errors.Is(err, ErrAborted) || !errors.Is(err, bad) {
		t.Fatalf("Transact with a failing build returned %v, want ErrAborted wrapping the cause", err)
	}
	if fs = poll(sess); fs.NumRecords() != 5 {
		t.Fatalf("after the abort %d records were consumed again, want 5", fs.NumRecords())
	}
	if err := Transact(context.Background(), sess, func() ([]*kgo.Record, error) { return out(fs), nil }); err != nil {
		t.Fatalf("Transact: %v", err)
	}
	sess.Close()
	if n := readCommitted(t, brokers, topicOut); n != 5 {
		t.Fatalf("%d committed output records, want 5 (the aborted batch's must not be visible)", n)
	}

	sess = newSession()
	defer sess.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if n := sess.PollFetches(ctx).NumRecords(); n != 0 {
		t.Fatalf("a new session consumed %d committed records again, want 0", n)
	}
}
