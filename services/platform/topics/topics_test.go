package topics

import (
	"context"
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
)

func newAdmin(t *testing.T, opts ...kfake.Opt) *kgo.Client {
	t.Helper()
	cluster, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func TestEnsureIsIdempotent(t *testing.T) {
	ctx := context.Background()
	adm := newAdmin(t)
	cfg := NewDefaultConfig()
	cfg.Partitions = 3
	first, err := Ensure(ctx, adm, cfg, Understudy(cfg))
	if err != nil {
		t.Fatal(err)
	}
	second, err := Ensure(ctx, adm, cfg, Understudy(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(schemas.Topics) || len(second) != len(schemas.Topics) {
		t.Fatalf("results: %v / %v", first, second)
	}
	for i := range first {
		if !first[i].Created || second[i].Created || second[i].Partitions != 3 {
			t.Errorf("topic %s: first=%+v second=%+v", first[i].Name, first[i], second[i])
		}
	}
	n, err := CheckCoPartitioned(ctx, adm, schemas.TopicInference, schemas.TopicShadow, schemas.TopicLabels)
	if err != nil || n != 3 {
		t.Fatalf("CheckCoPartitioned = %d, %v", n, err)
	}
}

func TestCheckCoPartitionedRefusesMismatch(t *testing.T) {
	ctx := context.Background()
	adm := newAdmin(t, kfake.SeedTopics(4, schemas.TopicInference), kfake.SeedTopics(6, schemas.TopicShadow))
	_, err := CheckCoPartitioned(ctx, adm, schemas.TopicInference, schemas.TopicShadow)
	if !errors.Is(err, ErrPartitionMismatch) {
		t.Fatalf("err = %v, want ErrPartitionMismatch", err)
	}
	_, err = CheckCoPartitioned(ctx, adm, schemas.TopicInference, schemas.TopicLabels)
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("err = %v, want ErrMissing", err)
	}
	cfg := NewDefaultConfig()
	cfg.Partitions = 4
	if _, err := Ensure(ctx, adm, cfg, Understudy(cfg)); !errors.Is(err, ErrPartitionMismatch) {
		t.Fatalf("Ensure over a 6-partition shadow topic: err = %v, want ErrPartitionMismatch", err)
	}
}
