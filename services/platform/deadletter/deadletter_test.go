package deadletter

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

func TestPublishKeepsBytesAndNamesTheSource(t *testing.T) {
	ctx := context.Background()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, schemas.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.ConsumeTopics(schemas.TopicDeadLetter))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	reg := prometheus.NewRegistry()
	p := New("joiner", cl, reg)
	src := &kgo.Record{Topic: schemas.TopicInference, Partition: 3, Offset: 17, Key: []byte("r1"), Value: []byte{0xde, 0xad}}
	if err := p.Publish(ctx, src, ReasonDecode, errors.New("unrecognised framing")); err != nil {
		t.Fatal(err)
	}
	fs := cl.PollFetches(ctx)
	if errs := fs.Errors(); len(errs) > 0 {
		t.Fatal(errs)
	}
	recs := fs.Records()
	if len(recs) != 1 {
		t.Fatalf("%d dead letters, want 1", len(recs))
	}
	got := map[string]string{}
	for _, h := range recs[0].Headers {
		got[h.Key] = string(h.Value)
	}
	want := map[string]string{
		schemas.HeaderDLQReason: "decode", schemas.HeaderDLQError: "unrecognised framing",
		schemas.HeaderDLQSourceTopic: schemas.TopicInference, schemas.HeaderDLQSourcePartition: "3",
		schemas.HeaderDLQSourceOffset: "17", schemas.HeaderDLQService: "joiner",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("header %s = %q, want %q", k, got[k], v)
		}
	}
	if string(recs[0].Key) != "r1" || string(recs[0].Value) != "\xde\xad" {
		t.Errorf("key/value changed: %q %x", recs[0].Key, recs[0].Value)
	}
	if n := testutil.ToFloat64(p.sent.WithLabelValues(ReasonDecode)); n != 1 {
		t.Errorf("counted %v dead letters, want 1", n)
	}
}
