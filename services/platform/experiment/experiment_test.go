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

func TestShadowOnTheChampionsServerIsRefused(t *testing.T) {
	yaml := `experiments:
  - name: e
    champion_url: http://models.internal:8080
    shadows:
      - {name: same, url: "http://MODELS.internal:8080/"}
      - {name: allowed, url: "http://models.internal:8080", allow_champion_url: true}
      - {name: other-port, url: "http://models.internal:8081"}
      - {name: mgmt, url: "http://s:1", forward: {paths: ["/v2/repository/*"], methods: [delete], headers: [Authorization]}}
`
	_, err := Parse([]byte(yaml))
	if err == nil {
		t.Fatal("accepted")
	}
	msg := err.Error()
	for _, want := range []string{`shadow "same": url points at the champion's server`, `"/v2/repository/*" is a model-management path`, `"delete" is not an upper-case HTTP method`, `"Authorization" is never forwarded`} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	for _, unwanted := range []string{`"allowed"`, `"other-port"`} {
		if strings.Contains(msg, unwanted) {
			t.Errorf("error names %s:\n%s", unwanted, msg)
		}
	}
}

func TestForwardDefaults(t *testing.T) {
	s := Shadow{Name: "s", URL: "http://s:1"}
	s.Defaults()
	for p, want := range map[string]bool{
		"/v2/models/m/infer": true, "/v2/models/m/versions/2/infer": true, "/v2/models/m/ready": false,
		"/v2/repository/models/m/unload": false, "/v2/models//infer": false, "/v2/models/m/infer?x=1": false,
	} {
		if got := s.Forward.AllowsPath(p); got != want {
			t.Errorf("AllowsPath(%q) = %v, want %v", p, got, want)
		}
	}
	if !s.Forward.AllowsMethod("POST") || s.Forward.AllowsMethod("DELETE") {
		t.Error("default methods are not POST only")
	}
	any := Forward{}
	if !any.AllowsPath("/predict") || any.AllowsPath("/v2/repository/index") {
		t.Error("json-pointer default: any path but management ones")
	}
}

func TestCompareSettingsAreValidated(t *testing.T) {
	bad, good := 1.5, 0.7
	exps := []Experiment{{Name: "a", Shadows: []Shadow{{Name: "s", URL: "http://m:1"}}}}
	exps[0].Shadows[0].Defaults()
	exps[0].Compare.Threshold = &bad
	exps[0].Compare.Tolerance.Relative = -1
	err := Validate(exps)
	if err == nil || !strings.Contains(err.Error(), "compare.threshold") || !strings.Contains(err.Error(), "compare.tolerance") {
		t.Fatalf("want both compare problems, got %v", err)
	}
	exps[0].Compare.Threshold = &good
	exps[0].Compare.Tolerance.Relative = 0.05
	if err := Validate(exps); err != nil {
		t.Fatal(err)
	}
}
