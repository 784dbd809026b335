package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/topics"
)

func newClient(t *testing.T, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	return clientFor(t, broker.Brokers, opts...)
}

// clientFor returns a client of brokers, closed after the test.
func clientFor(t *testing.T, brokers string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	kc := kafka.NewDefaultConfig("integration")
	kc.Brokers = brokers
	cl, err := kgo.NewClient(append(kc.Opts(), opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestCoPartitionCheckOnRealBroker proves on Apache Kafka (not only kfake) that joined topics
// with different partition counts are refused with ErrPartitionMismatch.
func TestCoPartitionCheckOnRealBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := newClient(t)
	adm := kadm.NewClient(cl)
	suffix := time.Now().UnixNano()
	a, b, c := fmt.Sprintf("copart-a-%d", suffix), fmt.Sprintf("copart-b-%d", suffix), fmt.Sprintf("copart-c-%d", suffix)
	for topic, parts := range map[string]int32{a: 4, b: 4, c: 6} {
		if _, err := adm.CreateTopic(ctx, parts, 1, nil, topic); err != nil {
			t.Fatal(err)
		}
	}
	waitTopics(ctx, t, cl, a, b, c)
	if n, err := topics.CheckCoPartitioned(ctx, cl, a, b); err != nil || n != 4 {
		t.Fatalf("equal counts: n=%d err=%v", n, err)
	}
	if _, err := topics.CheckCoPartitioned(ctx, cl, a, c); !errors.Is(err, topics.ErrPartitionMismatch) {
		t.Fatalf("4 vs 6 partitions: err = %v, want ErrPartitionMismatch", err)
	}
}

// TestKeyPartitioningMatchesJava proves on Apache Kafka that records keyed by request id land
// on the partition the Java client chooses (murmur2), so joins with Java or Kafka Streams
// producers line up. Expected partitions come from org.apache.kafka.common.utils.Utils.murmur2.
func TestKeyPartitioningMatchesJava(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl := newClient(t)
	topic := fmt.Sprintf("murmur2-%d", time.Now().UnixNano())
	if _, err := kadm.NewClient(cl).CreateTopic(ctx, 8, 1, nil, topic); err != nil {
		t.Fatal(err)
	}
	waitTopics(ctx, t, cl, topic)
	java := map[string]int32{"0193a0c2-7a10-7000-8000-000000000001": 1, "req-1": 3, "req-2": 5, "req-3": 4, "abc": 3, "x": 6}
	for key, want := range java {
		r, err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte(key), Value: []byte("v")}).First()
		if err != nil {
			t.Fatal(err)
		}
		if r.Partition != want {
			t.Errorf("key %q on partition %d, Java puts it on %d", key, r.Partition, want)
		}
	}
}

func waitTopics(ctx context.Context, t *testing.T, cl *kgo.Client, names ...string) {
	t.Helper()
	for {
		if _, err := topics.CheckCoPartitioned(ctx, cl, names...); err == nil || errors.Is(err, topics.ErrPartitionMismatch) {
			return
		} else if ctx.Err() != nil {
			t.Fatalf("topics %s never appeared: %v", strings.Join(names, ","), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
