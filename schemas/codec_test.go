package schemas

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

func TestRoundTripBothFramings(t *testing.T) {
	ctx := context.Background()
	inf, _, _, cmp := goldenValues()
	for _, framing := range []string{"single-object", "confluent"} {
		t.Run(framing, func(t *testing.T) {
			cs, err := NewCodecs()
			if err != nil {
				t.Fatal(err)
			}
			if framing == "confluent" {
				cs.Inference.UseConfluentID(7, nil)
				cs.Comparison.UseConfluentID(9, nil)
			}
			b, err := cs.Inference.Encode(nil, inf)
			if err != nil {
				t.Fatal(err)
			}
			if framing == "confluent" && (b[0] != 0 || b[4] != 7) {
				t.Fatalf("confluent header = %x, want 0000000007", b[:5])
			}
			got, err := cs.Inference.Decode(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, inf) {
				t.Fatalf("round trip changed the event:\n got %+v\nwant %+v", got, inf)
			}
			b, err = cs.Comparison.Encode(nil, cmp)
			if err != nil {
				t.Fatal(err)
			}
			gotCmp, err := cs.Comparison.Decode(ctx, b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(gotCmp, cmp) {
				t.Fatalf("round trip changed the comparison:\n got %+v\nwant %+v", gotCmp, cmp)
			}
		})
	}
}

func TestConfluentResolvesUnknownIDs(t *testing.T) {
	ctx := context.Background()
	writer, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	writer.Label.UseConfluentID(42, nil)
	_, _, lbl, _ := goldenValues()
	b, err := writer.Label.Encode(nil, lbl)
	if err != nil {
		t.Fatal(err)
	}
	reader, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Label.Decode(ctx, b); !errors.Is(err, ErrUnknownSchema) {
		t.Fatalf("decode without registry: err = %v, want ErrUnknownSchema", err)
	}
	calls := 0
	reader.Label.UseConfluentID(0, func(_ context.Context, id int) (string, error) {
		calls++
		if id != 42 {
			return "", errors.New("no such id")
		}
		return SchemaText(SchemaLabel)
	})
	for range 2 {
		got, err := reader.Label.Decode(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, lbl) {
			t.Fatalf("got %+v, want %+v", got, lbl)
		}
	}
	if calls != 1 {
		t.Fatalf("resolver called %d times, want 1 (cached)", calls)
	}
}

func TestDecodeErrors(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	good, err := cs.Label.Encode(nil, LabelEvent{RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	otherType, err := cs.Inference.Encode(nil, InferenceEvent{RequestID: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{"empty", nil, ErrFraming},
		{"json", []byte(`{"request_id":"r1"}`), ErrFraming},
		{"other event type", otherType, ErrUnknownSchema},
		{"truncated body", good[:len(good)-3], ErrMalformed},
		{"trailing bytes", append(append([]byte{}, good...), 1, 2), ErrMalformed},
		{"confluent without registry", []byte{0, 0, 0, 0, 1, 2}, ErrUnknownSchema},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cs.Label.Decode(context.Background(), tc.in)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestOlderWriterFieldsTakeDefaults(t *testing.T) {
	// A v0 label writer that predates tenant and source: its data must still decode.
	const v0 = `{"type":"record","name":"Label","namespace":"ml.understudy.v1","fields":[
		{"name":"request_id","type":"string"},
		{"name":"value","type":["null","double","string",{"type":"array","items":"double"}],"default":null},
		{"name":"event_time","type":{"type":"long","logicalType":"timestamp-micros"}}]}`
	cur, err := SchemaText(SchemaLabel)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckBackward(cur, v0); err != nil {
		t.Fatalf("current label schema should read v0: %v", err)
	}
	old, err := newCodec(v0, labelToNative, labelFromNative)
	if err != nil {
		t.Fatal(err)
	}
	_, _, lbl, _ := goldenValues()
	b, err := old.current.BinaryFromNative(old.soe[:], map[string]any{"request_id": lbl.RequestID, "value": predictionToNative(lbl.Value), "event_time": lbl.EventTime})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.Label.Decode(context.Background(), b); !errors.Is(err, ErrUnknownSchema) {
		t.Fatalf("unregistered old writer: err = %v, want ErrUnknownSchema", err)
	}
	if err := cs.Label.AddWriterSchema(v0); err != nil {
		t.Fatal(err)
	}
	got, err := cs.Label.Decode(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if got.RequestID != lbl.RequestID || !got.Value.Equal(lbl.Value) || got.Source != "" || !strings.EqualFold(got.Tenant, "") {
		t.Fatalf("got %+v", got)
	}
}

// A hostile record declaring a huge array once made goavro preallocate gigabytes before
// reading a single item; Decode must reject it cheaply instead.
func TestHugeDeclaredArrayIsRejected(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	fp := cs.Label.Fingerprint()
	b := []byte{0xC3, 0x01, byte(fp), byte(fp >> 8), byte(fp >> 16), byte(fp >> 24), byte(fp >> 32), byte(fp >> 40), byte(fp >> 48), byte(fp >> 56)}
	b = append(b, 0x02, 'r')                    // request_id "r"
	b = append(b, 0x00)                         // experiment ""
	b = append(b, 0x00)                         // tenant ""
	b = append(b, 0x06)                         // value: union branch 3 (array)
	b = append(b, 0xfe, 0xff, 0xff, 0xff, 0x0f) // block count 2^31-1 (zigzag)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := cs.Label.Decode(context.Background(), b); !errors.Is(err, ErrMalformed) {
		t.Fatalf("err = %v, want ErrMalformed", err)
	}
	runtime.ReadMemStats(&after)
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Fatalf("decoding allocated %d MiB", grew>>20)
	}
}

// goavro's canonical form keeps {"type":"long"} for logical types, which gave fingerprints no
// other Avro library computes. The header bytes below were computed independently with Python
// fastavro: fingerprint(to_parsing_canonical_form(schema), "CRC-64-AVRO"), which is the
// little-endian byte sequence written after C3 01.
func TestFingerprintsMatchTheAvroSpecification(t *testing.T) {
	cs, err := NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	le := func(fp uint64) string { return fmt.Sprintf("%x", binary.LittleEndian.AppendUint64(nil, fp)) }
	want := map[string][2]string{
		"inference_event": {le(cs.Inference.Fingerprint()), "c999e06c09e76a54"},
		"shadow_result":   {le(cs.Shadow.Fingerprint()), "c1e8b60e5fea384c"},
		"label":           {le(cs.Label.Fingerprint()), "3dc6be68f0c9de98"},
		"comparison":      {le(cs.Comparison.Fingerprint()), "e3cd3fe995a64f96"},
	}
	for name, fp := range want {
		if fp[0] != fp[1] {
			t.Errorf("%s: fingerprint bytes %s, Avro specification gives %s", name, fp[0], fp[1])
		}
	}
	// The example from the specification's test suite: "null" → 0x63dd24e7cc258f8a.
	if got := Fingerprint64([]byte(`"null"`)); got != 0x63dd24e7cc258f8a {
		t.Errorf(`Fingerprint64("null") = %016x`, got)
	}
}
