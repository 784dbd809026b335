package predict

import (
	"errors"
	"testing"

	"github.com/understudy-ml/understudy/schemas"
)

func TestExtract(t *testing.T) {
	tests := []struct {
		spec, body string
		want       schemas.Prediction
		wantErr    error
	}{
		{"oip-v2", `{"model_name":"m","outputs":[{"name":"p","datatype":"FP32","shape":[1],"data":[0.75]}]}`, schemas.Number(0.75), nil},
		{"oip-v2", `{"outputs":[{"data":[0.1,0.9]}]}`, schemas.Vector([]float64{0.1, 0.9}), nil},
		{"oip-v2", `{"outputs":[{"datatype":"BYTES","data":["fraud"]}]}`, schemas.Label("fraud"), nil},
		{"oip-v2", `{"outputs":[]}`, schemas.Prediction{}, ErrNoPrediction},
		{"kserve-v1", `{"predictions":[[0.2,0.8]]}`, schemas.Vector([]float64{0.2, 0.8}), nil},
		{"kserve-v1", `{"predictions":[3]}`, schemas.Label("3"), nil}, // an integer prediction is a class
		{"kserve-v1", `{"predictions":[3.0]}`, schemas.Number(3), nil},
		{"kserve-v1,output=score", `{"predictions":[3]}`, schemas.Number(3), nil},
		// MLServer's scikit-learn runtime: predict() as INT64, predict_proba() as FP64.
		{"oip-v2", `{"model_name":"iris","outputs":[{"name":"predict","shape":[1,1],"datatype":"INT64","data":[2]}]}`, schemas.Label("2"), nil},
		{"oip-v2", `{"outputs":[{"datatype":"UINT8","data":[[1]]}]}`, schemas.Label("1"), nil},
		{"oip-v2", `{"outputs":[{"datatype":"BOOL","data":[true]}]}`, schemas.Label("true"), nil},
		{"oip-v2", `{"outputs":[{"datatype":"FP32","data":[1]}]}`, schemas.Number(1), nil},
		{"oip-v2,output=score", `{"outputs":[{"datatype":"INT64","data":[2]}]}`, schemas.Number(2), nil},
		{"json-pointer:/class,output=class", `{"class":4}`, schemas.Label("4"), nil},
		{"json-pointer:/score", `{"score":1}`, schemas.Number(1), nil},
		{"json-pointer:/result/score", `{"result":{"score":0.5}}`, schemas.Number(0.5), nil},
		{"json-pointer:/a~1b", `{"a/b":"x"}`, schemas.Label("x"), nil},
		{"json-pointer:/r", `{"r":{"nested":1}}`, schemas.Prediction{}, ErrUnsupported},
		{"oip-v2", `<html>`, schemas.Prediction{}, ErrNotJSON},
	}
	for _, tc := range tests {
		t.Run(tc.spec+" "+tc.body, func(t *testing.T) {
			e, err := Parse(tc.spec)
			if err != nil {
				t.Fatal(err)
			}
			got, err := e.Extract([]byte(tc.body))
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if !got.Equal(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := Parse("oip-v2,output=probability"); err == nil {
		t.Fatal("unknown output mode accepted")
	}
	if _, err := Parse("grpc"); err == nil {
		t.Fatal("Parse(grpc) should fail")
	}
}

func FuzzExtract(f *testing.F) {
	f.Add(`{"outputs":[{"data":[[1,2],[3]]}]}`)
	e, _ := Parse(ProtocolOIPv2)
	f.Fuzz(func(_ *testing.T, body string) { _, _ = e.Extract([]byte(body)) })
}
