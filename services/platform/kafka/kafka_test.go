package kafka

import (
	"context"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestValidateReportsEveryProblem(t *testing.T) {
	c := Config{Brokers: " , "}
	err := c.Validate()
	if err == nil {
		t.Fatal("want error")
	}
	for _, want := range []string{"kafka.brokers", "kafka.dial-timeout", "kafka.request-timeout", "kafka.compression"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// The partition of a keyed record must match the Java client's murmur2 partitioner, or joins
// with records produced by Java or Kafka Streams would miss. Expected partitions were computed
// with org.apache.kafka.common.utils.Utils.murmur2 (toPositive(murmur2(key)) % 8).
func TestKeyedRecordsUseJavaMurmur2(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "t"))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	c := NewDefaultConfig("test")
	c.Brokers = strings.Join(cluster.ListenAddrs(), ",")
	cl, err := kgo.NewClient(c.Opts()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	for key, want := range javaPartitions {
		r := cl.ProduceSync(context.Background(), &kgo.Record{Topic: "t", Key: []byte(key), Value: []byte("v")})
		rec, err := r.First()
		if err != nil {
			t.Fatal(err)
		}
		if rec.Partition != want {
			t.Errorf("key %q went to partition %d, Java sends it to %d", key, rec.Partition, want)
		}
	}
}

var javaPartitions = map[string]int32{
	"0193a0c2-7a10-7000-8000-000000000001": 1,
	"req-1":                                3,
	"req-2":                                5,
	"req-3":                                4,
	"abc":                                  3,
	"x":                                    6,
}
