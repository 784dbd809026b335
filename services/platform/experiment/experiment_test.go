package experiment

import (
	"strings"
	"testing"
	"time"
)

func TestParseDefaultsAndErrors(t *testing.T) {
	exps, err := Parse([]byte(`experiments:
  - name: fraud
    shadows:
      - {name: v7, url: "http://v7:8000", max_in_flight: 8, rate_limit: 100}
      - {name: copy, role: noise_baseline, url: "http://v6:8000/v2/models/fraud/infer"}
    join: {window: 2m, label_window: 72h}
`))
	if err != nil {
		t.Fatal(err)
	}
	if j := exps[0].Join; j.Window != 2*time.Minute || j.LabelWindow != 72*time.Hour || j.Grace != 0 {
		t.Fatalf("join: %+v", j)
	}
	if got := exps[0].ShadowNames(); strings.Join(got, ",") != "v7,copy" {
		t.Fatalf("shadow names %v", got)
	}
	s := exps[0].Shadows[0]
	if s.Timeout != 2*time.Second || s.Burst != 10 || s.Circuit.Failures != 5 || s.Model != "v7" || s.Sampling.Rate1() != 1 {
		t.Fatalf("defaults: %+v", s)
	}
	_, err = Parse([]byte(`experiments:
  - name: fraud
    shadows:
      - {name: a, role: boss, url: "ftp://x", protocol: grpc, max_in_flight: -1, sampling: {rate: 3, key: "cookie"}}
      - {name: a, url: "http://x"}
  - name: fraud
    shadows: []
    join: {grace: -1s}
`))
	for _, want := range []string{"role \"boss\"", "not an http(s) URL", "unknown protocol", "max_in_flight", "sampling.rate", "sampling.key", `shadow "a": defined twice`, `experiment "fraud": defined twice`, "at least one shadow", "must not be negative"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
