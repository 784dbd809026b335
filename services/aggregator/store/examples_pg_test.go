package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/pgtest"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// TestExamplesKeepTheBestAcrossBatches: examples written by several batches leave exactly the
// k best of each window and kind, as one picker over all comparisons would; the filter selects
// by shadow, kind and window; payloads survive the round trip; retention drops them with the
// base windows.
func TestExamplesKeepTheBestAcrossBatches(t *testing.T) {
	ctx := context.Background()
	db := pgtest.Start(t)
	s := store.New(db, "g", store.DefaultLevels(time.Minute))
	const k = 3
	all := window.NewPicker(k, time.Minute)
	for b := range 4 {
		p := window.NewPicker(k, time.Minute)
		for i := range 40 {
			id := b*40 + i
			c := schemas.Comparison{
				RequestID: fmt.Sprintf("r%03d", id), Experiment: "e", EventTime: t0.Add(time.Duration(id%2) * time.Minute), Status: schemas.StatusComplete,
				Champion:    &schemas.Outcome{Name: "champ", Status: 200, Prediction: schemas.Number(0.5)},
				Shadows:     []schemas.Outcome{{Name: "v7", Status: 200, Prediction: schemas.Number(float64(id%17) / 16), Body: []byte(`{"p":1}`)}},
				RequestBody: []byte{0xff, 0x00, 'x'},
			}
			if id%10 == 0 {
				c.Shadows[0] = schemas.Outcome{Name: "v7", Status: 500, Error: &schemas.Error{Kind: "http_status", Message: "500 Internal Server Error"}, Body: []byte("boom"), BodyTruncated: true}
			}
			p.Add(c, window.Compare{})
			all.Add(c, window.Compare{})
		}
		batch := store.Batch{Examples: p.Examples(), ExamplesPerKind: k, Offsets: []store.Offset{{Topic: "t", Partition: 0, First: int64(b * 40), Next: int64(b*40 + 40)}}}
		if _, err := s.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	got, err := store.Examples(ctx, db, store.ExampleFilter{Experiment: "e", From: t0, To: t0.Add(time.Hour), Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := all.Examples()
	if len(got) != len(want) {
		t.Fatalf("%d examples stored, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].RequestID != want[i].Comparison.RequestID || got[i].Kind != want[i].Kind || !got[i].Window.Equal(want[i].Key.Start) {
			t.Fatalf("example %d: %s %s %s, want %s %s %s", i, got[i].Window, got[i].Kind, got[i].RequestID, want[i].Key.Start, want[i].Kind, want[i].Comparison.RequestID)
		}
	}
	errs, err := store.Examples(ctx, db, store.ExampleFilter{Experiment: "e", Shadow: "v7", Kind: window.ExampleShadowError, From: t0, To: t0.Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	if len(errs) != k {
		t.Fatalf("%d shadow errors in the first window, want %d", len(errs), k)
	}
	e := errs[0]
	if e.Answer.Error == nil || e.Answer.Error.Message != "500 Internal Server Error" || e.Answer.Status != 500 || e.Answer.Body.Text != "boom" || !e.Answer.Body.Truncated {
		t.Fatalf("error payload lost: %+v", e.Answer)
	}
	if string(e.Request.Bytes()) != "\xff\x00x" || e.Request.Base64 == "" {
		t.Fatalf("binary request body %+v", e.Request)
	}
	if none, _ := store.Examples(ctx, db, store.ExampleFilter{Experiment: "e", Shadow: "other", From: t0, To: t0.Add(time.Hour)}); len(none) != 0 {
		t.Fatalf("shadow filter ignored: %d", len(none))
	}
	if _, err := s.Retain(ctx, t0.Add(8*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if left, _ := store.Examples(ctx, db, store.ExampleFilter{Experiment: "e", From: t0, To: t0.Add(time.Hour)}); len(left) != 0 {
		t.Fatalf("%d examples outlived their windows' retention", len(left))
	}
}
