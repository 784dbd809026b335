package window

import (
	"fmt"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

func exampleCmp(id string, champion, shadow schemas.Prediction, shadowErr *schemas.Error) schemas.Comparison {
	at := time.Date(2026, 12, 4, 10, 0, 30, 0, time.UTC)
	s := schemas.Outcome{Name: "cand", Status: 200, Prediction: shadow, Error: shadowErr, Body: []byte(`{"p":1}`)}
	if shadowErr != nil {
		s.Status = 500
	}
	return schemas.Comparison{
		RequestID: id, Experiment: "e", EventTime: at, Status: schemas.StatusComplete,
		Champion:    &schemas.Outcome{Name: "champ", Status: 200, Prediction: champion},
		Shadows:     []schemas.Outcome{s, {Name: "copy", Status: 200, Prediction: champion}},
		RequestBody: []byte(`{"x":1}`),
	}
}

func kinds(exs []Example, shadow string) map[string][]string {
	out := map[string][]string{}
	for _, e := range exs {
		if e.Key.Shadow == shadow {
			out[e.Kind] = append(out[e.Kind], e.Comparison.RequestID)
		}
	}
	return out
}

// TestPickerKeepsTheRequestsThatExplainTheNumbers: the largest differences first, flips by
// the window's own agreement rule, shadow errors with their payload, labeled requests exactly
// one model got right, and nothing but samples for an identical copy.
func TestPickerKeepsTheRequestsThatExplainTheNumbers(t *testing.T) {
	p := NewPicker(2, time.Minute)
	n := schemas.Number
	p.Add(exampleCmp("small", n(0.1), n(0.15), nil), Compare{})
	p.Add(exampleCmp("big", n(0.1), n(0.9), nil), Compare{})
	p.Add(exampleCmp("mid", n(0.4), n(0.6), nil), Compare{})
	p.Add(exampleCmp("same", n(0.3), n(0.3), nil), Compare{})
	p.Add(exampleCmp("err", n(0.3), schemas.Prediction{}, &schemas.Error{Kind: "http_status", Message: "500 Internal Server Error"}), Compare{})
	p.Add(exampleCmp("skip", n(0.3), schemas.Prediction{}, &schemas.Error{Kind: schemas.NotCalledOutsideSample}), Compare{})
	labeled := exampleCmp("labeled", n(0.2), n(0.8), nil)
	labeled.Label = &schemas.LabelValue{Value: n(1)}
	p.Add(labeled, Compare{})

	exs := p.Examples()
	got := kinds(exs, "cand")
	want := map[string]string{
		ExampleDifference:  "[big mid]",
		ExampleFlip:        "[big mid]", // 0.4 → 0.6 crosses 0.5 as well
		ExampleShadowError: "[err]",
		ExampleOneRight:    "[labeled]",
	}
	for kind, w := range want {
		if g := fmt.Sprint(got[kind]); g != w {
			t.Errorf("%s: %s, want %s", kind, g, w)
		}
	}
	if len(got[ExampleSample]) != 2 || len(got[ExampleChampionError]) != 0 {
		t.Errorf("samples %v, champion errors %v", got[ExampleSample], got[ExampleChampionError])
	}
	for _, e := range exs {
		if e.Comparison.RequestID == "skip" {
			t.Error("a call not made is coverage, not an example")
		}
		if len(e.Comparison.Shadows) != 1 || e.Comparison.Shadows[0].Name != e.Key.Shadow {
			t.Fatalf("example %s keeps shadows %+v, want only %s", e.Comparison.RequestID, e.Comparison.Shadows, e.Key.Shadow)
		}
		if e.Kind == ExampleShadowError && e.Comparison.Shadows[0].Error.Message != "500 Internal Server Error" {
			t.Errorf("the shadow error lost its payload: %+v", e.Comparison.Shadows[0])
		}
	}
	// The copy answers as the champion: it only ever gives samples.
	for kind := range kinds(exs, "copy") {
		if kind != ExampleSample {
			t.Errorf("an identical copy gave %s examples", kind)
		}
	}
	if exs[0].Key.Start != time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC) {
		t.Errorf("window start %s", exs[0].Key.Start)
	}
	classes := NewPicker(2, time.Minute)
	classes.Add(exampleCmp("cls", schemas.Label("cat"), schemas.Label("dog"), nil), Compare{})
	classes.Add(exampleCmp("same-cls", schemas.Label("cat"), schemas.Label("cat"), nil), Compare{})
	if g := fmt.Sprint(kinds(classes.Examples(), "cand")[ExampleFlip]); g != "[cls]" {
		t.Errorf("class flips %s, want [cls]", g)
	}
}

// TestPickerIsOrderIndependent: the same comparisons in any order give the same examples, so
// a replayed batch or another split into batches keeps the same ones.
func TestPickerIsOrderIndependent(t *testing.T) {
	var cs []schemas.Comparison
	for i := range 50 {
		cs = append(cs, exampleCmp(fmt.Sprintf("r%02d", i), schemas.Number(0.5), schemas.Number(float64(i%7)/10), nil))
	}
	pick := func(order []schemas.Comparison) string {
		p := NewPicker(3, time.Minute)
		for _, c := range order {
			p.Add(c, Compare{})
		}
		var ids []string
		for _, e := range p.Examples() {
			ids = append(ids, e.Kind+":"+e.Comparison.RequestID)
		}
		return fmt.Sprint(ids)
	}
	forward := pick(cs)
	reversed := make([]schemas.Comparison, len(cs))
	for i, c := range cs {
		reversed[len(cs)-1-i] = c
	}
	if back := pick(reversed); back != forward {
		t.Fatalf("order changed the examples:\n%s\n%s", forward, back)
	}
	if NewPicker(0, time.Minute).Examples() != nil {
		t.Fatal("k = 0 keeps examples")
	}
}
