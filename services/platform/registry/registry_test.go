package registry

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr/srfake"
	"github.com/understudy-ml/understudy/schemas"
)

func TestConfigureSwitchesToConfluentAndResolvesIDs(t *testing.T) {
	ctx := context.Background()
	reg := srfake.New()
	defer reg.Close()
	writer, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	if err := Configure(ctx, Config{URL: reg.URL()}, writer); err != nil {
		t.Fatal(err)
	}
	ev := schemas.InferenceEvent{RequestID: "r1", Experiment: "e", EventTime: time.UnixMicro(1700000000000000).UTC()}
	b, err := writer.Inference.Encode(nil, ev)
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0 {
		t.Fatalf("first byte %#x, want the Confluent magic 0", b[0])
	}
	// A second service configured against the same registry decodes the first one's records.
	reader, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	if err := Configure(ctx, Config{URL: reg.URL()}, reader); err != nil {
		t.Fatal(err)
	}
	got, err := reader.Inference.Decode(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, ev) {
		t.Fatalf("got %+v, want %+v", got, ev)
	}
	if err := (&Config{URL: "not a url"}).Validate(); err == nil {
		t.Fatal("Validate accepted a bad URL")
	}
}
