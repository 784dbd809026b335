package schemas

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden vectors in testdata/golden")

// goldenCase is one golden vector: testdata/golden/<name>.bin holds the single-object bytes and
// <name>.json their meaning in Avro's JSON encoding.
type goldenCase struct {
	name   string
	encode func(*Codecs) ([]byte, error)
	json   func(*Codecs) ([]byte, error)
	check  func(t *testing.T, cs *Codecs, bin, js []byte)
}

func goldenValues() (InferenceEvent, ShadowResult, LabelEvent, Comparison) {
	at := time.Date(2026, 11, 25, 12, 30, 0, 123456000, time.UTC)
	inf := InferenceEvent{
		RequestID:  "0193a0c2-7a10-7000-8000-000000000001",
		Experiment: "fraud-v7",
		Tenant:     "acme",
		Model:      ModelRef{Name: "fraud", Version: "6"},
		EventTime:  at,
		Request: HTTPRequest{
			Method: "POST", Path: "/v2/models/fraud/infer", ContentType: "application/json",
			Headers:      map[string]string{"x-request-id": "0193a0c2-7a10-7000-8000-000000000001"},
			Body:         []byte(`{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[0.5,1.5]}]}`),
			OriginalSize: 74,
		},
		Response: HTTPResponse{
			Status: 200, ContentType: "application/json",
			Body:         []byte(`{"model_name":"fraud","outputs":[{"name":"p","data":[0.25]}]}`),
			OriginalSize: 61, Prediction: Number(0.25),
		},
		Latency: 1234 * time.Microsecond,
	}
	sh := ShadowResult{
		RequestID: inf.RequestID, Experiment: "fraud-v7", Tenant: "acme", Shadow: "fraud-v7-candidate",
		Role: RoleCandidate, Model: ModelRef{Name: "fraud", Version: "7"}, EventTime: at,
		CalledAt: at.Add(2 * time.Millisecond),
		Response: HTTPResponse{Status: 504, Prediction: Prediction{}},
		Latency:  250 * time.Millisecond,
		Error:    &Error{Kind: "timeout", Message: "shadow did not answer within 250ms"},
	}
	lbl := LabelEvent{RequestID: inf.RequestID, Experiment: "fraud-v7", Value: Label("fraud"), EventTime: at.Add(72 * time.Hour), Source: "chargebacks"}
	cmp := Comparison{
		RequestID: inf.RequestID, Experiment: "fraud-v7", Tenant: "acme", EventTime: at, Status: StatusComplete,
		Champion: &Outcome{
			Name: "fraud", Version: "6", Role: RoleChampion, Status: 200, Prediction: Vector([]float64{0.25, 0.75}), Latency: 1234 * time.Microsecond,
			Body: []byte(`{"outputs":[{"name":"p","data":[0.25,0.75]}]}`),
		},
		Shadows: []Outcome{
			{
				Name: "fraud-v7-candidate", Version: "7", Role: RoleCandidate, Status: 200, Prediction: Vector([]float64{0.3, 0.7}), Latency: 2 * time.Millisecond,
				Body: []byte(`{"outputs":[{"name":"p","data":[0.3,0.7`), BodyTruncated: true,
			},
			{Name: "fraud-v6-copy", Version: "6", Role: RoleNoiseBaseline, Status: 500, Error: &Error{Kind: "http_status", Message: "500 Internal Server Error"}},
		},
		Label:       &LabelValue{Value: Label("fraud"), EventTime: at.Add(72 * time.Hour), Source: "chargebacks"},
		EmittedAt:   at.Add(3 * time.Second),
		RequestBody: inf.Request.Body,
		Segments:    []SegmentValue{{Key: "amount", Value: "[100, 1000)"}, {Key: "region", Value: SegmentUnknown}},
	}
	return inf, sh, lbl, cmp
}

func goldenCases() []goldenCase {
	inf, sh, lbl, cmp := goldenValues()
	return []goldenCase{
		goldenTyped("inference_event", func(cs *Codecs) *Codec[InferenceEvent] { return cs.Inference }, inf),
		goldenTyped("shadow_result_timeout", func(cs *Codecs) *Codec[ShadowResult] { return cs.Shadow }, sh),
		goldenTyped("label_class", func(cs *Codecs) *Codec[LabelEvent] { return cs.Label }, lbl),
		goldenTyped("comparison_labeled", func(cs *Codecs) *Codec[Comparison] { return cs.Comparison }, cmp),
	}
}

func goldenTyped[T any](name string, pick func(*Codecs) *Codec[T], v T) goldenCase {
	return goldenCase{
		name:   name,
		encode: func(cs *Codecs) ([]byte, error) { return pick(cs).Encode(nil, v) },
		json:   func(cs *Codecs) ([]byte, error) { return pick(cs).TextualFromValue(v) },
		check: func(t *testing.T, cs *Codecs, bin, js []byte) {
			t.Helper()
			c := pick(cs)
			fromBin, err := c.Decode(context.Background(), bin)
			if err != nil {
				t.Fatalf("decode golden bytes: %v", err)
			}
			fromJSON, err := c.ValueFromTextual(js)
			if err != nil {
				t.Fatalf("parse golden json: %v", err)
			}
			if !reflect.DeepEqual(fromBin, fromJSON) {
				t.Fatalf("golden bytes and json disagree:\nbytes: %+v\njson:  %+v", fromBin, fromJSON)
			}
			if !reflect.DeepEqual(fromBin, v) {
				t.Fatalf("golden bytes decode to %+v, want %+v", fromBin, v)
			}
			again, err := c.Encode(nil, fromJSON)
			if err != nil {
				t.Fatalf("re-encode: %v", err)
			}
			if !bytes.Equal(again, bin) {
				t.Fatalf("encoding the json meaning gives different bytes:\n got %x\nwant %x", again, bin)
			}
		},
	}
}

func TestGoldenVectors(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			binPath := filepath.Join("testdata", "golden", tc.name+".bin")
			jsonPath := filepath.Join("testdata", "golden", tc.name+".json")
			if *update {
				bin, err := tc.encode(cs)
				if err != nil {
					t.Fatal(err)
				}
				js, err := tc.json(cs)
				if err != nil {
					t.Fatal(err)
				}
				if err := os.MkdirAll(filepath.Dir(binPath), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(binPath, bin, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(jsonPath, append(js, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			bin, err := os.ReadFile(binPath)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenVectors -update to create)", err)
			}
			js, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			if bin[0] != 0xC3 || bin[1] != 0x01 {
				t.Fatalf("golden bytes start %x, want single-object header c301", bin[:2])
			}
			tc.check(t, cs, bin, bytes.TrimSpace(js))
		})
	}
}
