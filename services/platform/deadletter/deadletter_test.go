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

// TestRecordIsBounded: a record too large to forward must still fit in a dead letter: the
// value, key, headers and error text are cut, and the original size is stated.
func TestRecordIsBounded(t *testing.T) {
	big := make([]byte, 10<<20)
	src := &kgo.Record{
		Topic: schemas.TopicInference, Key: big[:5000], Value: big,
		Headers: []kgo.RecordHeader{{Key: "x", Value: big[:1<<20]}},
	}
	r := Record("joiner", src, ReasonTooLarge, errors.New(string(big[:100000])+"\xff"))
	if len(r.Value) != schemas.DeadLetterMaxValue || len(r.Key) != schemas.DeadLetterMaxKey {
		t.Fatalf("value %d bytes, key %d bytes", len(r.Value), len(r.Key))
	}
	got := map[string]string{}
	size := 0
	for _, h := range r.Headers {
		got[h.Key] = string(h.Value)
		size += len(h.Key) + len(h.Value)
	}
	if got["x"] != "" || size > 4<<10 {
		t.Errorf("source headers kept: %d header bytes", size)
	}
	if got[schemas.HeaderDLQOriginalSize] != "10485760" {
		t.Errorf("original size header %q", got[schemas.HeaderDLQOriginalSize])
	}
	if n := len(got[schemas.HeaderDLQError]); n > schemas.DeadLetterMaxError+3 {
		t.Errorf("error header %d bytes", n)
	}
	small := Record("joiner", &kgo.Record{Value: []byte("v"), Key: []byte("k")}, ReasonDecode, nil)
	for _, h := range small.Headers {
		if h.Key == schemas.HeaderDLQOriginalSize {
			t.Error("original size header on a record that was not cut")
		}
	}
}
