package schemas

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLimitsRejectHostileValues(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	l := DefaultLimits()
	good := InferenceEvent{RequestID: "r1", Experiment: "fraud", EventTime: now, Latency: time.Millisecond, Response: HTTPResponse{Status: 200, Prediction: Label("2")}}
	if err := l.Inference(good, now); err != nil {
		t.Fatalf("good event refused: %v", err)
	}
	long := strings.Repeat("x", 3000)
	for name, mutate := range map[string]func(*InferenceEvent){
		"empty request id":     func(e *InferenceEvent) { e.RequestID = "" },
		"non-UTF-8 request id": func(e *InferenceEvent) { e.RequestID = "r\xff" },
		"NUL in experiment":    func(e *InferenceEvent) { e.Experiment = "a\x00b" },
		"long experiment":      func(e *InferenceEvent) { e.Experiment = long },
		"newline in tenant":    func(e *InferenceEvent) { e.Tenant = "a\nb" },
		"event from 2100":      func(e *InferenceEvent) { e.EventTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC) },
		"no event time":        func(e *InferenceEvent) { e.EventTime = time.Time{} },
		"negative latency":     func(e *InferenceEvent) { e.Latency = -time.Second },
		"status 1000":          func(e *InferenceEvent) { e.Response.Status = 1000 },
		"long class label":     func(e *InferenceEvent) { e.Response.Prediction = Label(long) },
		"huge vector":          func(e *InferenceEvent) { e.Response.Prediction = Vector(make([]float64, 5000)) },
		"non-UTF-8 error kind": func(e *InferenceEvent) { e.Error = &Error{Kind: "\xfe"} },
	} {
		t.Run(name, func(t *testing.T) {
			ev := good
			mutate(&ev)
			err := l.Inference(ev, now)
			var fe *FieldError
			if !errors.Is(err, ErrInvalid) || !errors.As(err, &fe) {
				t.Fatalf("accepted or wrong error type: %v", err)
			}
			if len(err.Error()) > 200 {
				t.Errorf("error text of %d bytes (must not quote the value)", len(err.Error()))
			}
		})
	}
}

func TestLimitsOnComparisonsShadowsAndLabels(t *testing.T) {
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	l := DefaultLimits()
	cmp := Comparison{
		RequestID: "r", Experiment: "e", EventTime: now, Status: StatusComplete,
		Champion: &Outcome{Role: RoleChampion, Status: 200}, Shadows: []Outcome{{Name: "a", Role: RoleCandidate}, {Name: "b", Role: RoleNoiseBaseline}},
	}
	if err := l.Comparison(cmp, now); err != nil {
		t.Fatalf("good comparison refused: %v", err)
	}
	bad := cmp
	bad.Status = "bogus"
	bad.Shadows = []Outcome{{Name: "a"}, {Name: "a"}, {Name: "<img src=y>\x00"}}
	err := l.Comparison(bad, now)
	for _, want := range []string{"status", "appears twice", "shadows[2].name: contains a control character"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if err := l.Shadow(ShadowResult{RequestID: "r", Experiment: "e", Shadow: "s", Role: "king", EventTime: now}, now); err == nil {
		t.Error("unknown role accepted")
	}
	if err := l.Label(LabelEvent{RequestID: "r", Experiment: "e\xff", EventTime: now, Value: Label("1")}, now); err == nil {
		t.Error("non-UTF-8 label experiment accepted")
	}
	// Optional times that went through the codec unset come back as the epoch: still unset.
	codecs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	v, err := codecs.Shadow.Encode(nil, ShadowResult{RequestID: "r", Experiment: "e", Shadow: "a", EventTime: now})
	if err != nil {
		t.Fatal(err)
	}
	res, err := codecs.Shadow.Decode(t.Context(), v)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Shadow(res, now); err != nil {
		t.Errorf("a decoded result without called_at refused: %v", err)
	}
	if err := l.Label(LabelEvent{RequestID: "r", Experiment: "e", EventTime: now.Add(-30 * 24 * time.Hour), Value: Number(1)}, now); err != nil {
		t.Errorf("a month-old label refused: %v", err)
	}
}

// TestLimitsBoundTheComparison: the largest comparison the joiner can build from inputs within
// the default limits still fits a Kafka record (default max.message.bytes, 1 MiB).
func TestLimitsBoundTheComparison(t *testing.T) {
	l := DefaultLimits()
	name := strings.Repeat("n", l.MaxName)
	vector := make([]float64, l.MaxVector)
	outcome := func(i int) Outcome {
		return Outcome{
			Name: fmt.Sprintf("%s%04d", name[:l.MaxName-4], i), Version: name, Role: RoleCandidate, Status: 500,
			Prediction: Vector(vector), Latency: time.Second, Error: &Error{Kind: name, Message: strings.Repeat("m", l.MaxMessage)},
			Body: []byte(strings.Repeat("b", MaxComparisonBody)),
		}
	}
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	c := Comparison{
		RequestID: strings.Repeat("r", l.MaxID), Experiment: name, Tenant: name, EventTime: now, Status: StatusShadowError,
		Label: &LabelValue{Value: Vector(vector), EventTime: now, Source: name}, EmittedAt: now,
		RequestBody: []byte(strings.Repeat("q", MaxComparisonBody)),
	}
	for i := range MaxSegments {
		c.Segments = append(c.Segments, SegmentValue{Key: fmt.Sprintf("%s%04d", name[:l.MaxName-4], i), Value: strings.Repeat("v", MaxSegmentValue)})
	}
	champ := outcome(0)
	champ.Role = RoleChampion
	c.Champion = &champ
	for i := range l.MaxShadows {
		c.Shadows = append(c.Shadows, outcome(i+1))
	}
	if err := l.Comparison(c, now); err != nil {
		t.Fatalf("the largest valid comparison is not valid: %v", err)
	}
	codecs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	v, err := codecs.Comparison.Encode(nil, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(v) >= 1<<20 {
		t.Fatalf("the largest valid comparison encodes to %d bytes, over a Kafka record", len(v))
	}
	t.Logf("largest valid comparison: %d KiB", len(v)>>10)
	c.Shadows[3].Body = append(c.Shadows[3].Body, 'x')
	if err := l.Comparison(c, now); err == nil || !strings.Contains(err.Error(), "shadows[3].body") {
		t.Fatalf("a body over the limit: %v", err)
	}
}
