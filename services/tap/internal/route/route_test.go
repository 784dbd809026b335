package route

import (
	"strings"
	"testing"
)

func TestParseFillsDefaultsAndMatchesMostSpecific(t *testing.T) {
	routes, err := Parse([]byte(`routes:
  - name: any
    experiment: e0
    champion: {url: "http://c0"}
  - name: prefix
    match: {path_prefix: /v2/models/fraud}
    experiment: e1
    champion: {url: "http://c1", protocol: kserve-v1}
  - name: longer
    match: {path_prefix: /v2/models/fraud/versions}
    experiment: e2
    champion: {url: "http://c2"}
  - name: host
    match: {host: models.internal}
    experiment: e3
    champion: {url: "http://c3"}
`))
	if err != nil {
		t.Fatal(err)
	}
	if r := routes[0]; r.Champion.Protocol != "oip-v2" || r.Sampling.SampleRate() != 1 || r.Capture.MaxBytes != 512<<10 || r.Capture.Oversize != OversizeTruncate {
		t.Fatalf("defaults not filled: %+v", r)
	}
	table := NewTable(routes)
	tests := []struct{ host, path, want string }{
		{"x", "/other", "any"},
		{"x", "/v2/models/fraud/infer", "prefix"},
		{"x:8080", "/v2/models/fraud/versions/2/infer", "longer"},
		{"models.internal:443", "/v2/models/fraud/infer", "host"},
		{"MODELS.internal", "/", "host"},
	}
	for _, tc := range tests {
		if i := table.Match(tc.host, tc.path); i < 0 || table.Routes()[i].Name != tc.want {
			t.Errorf("Match(%q, %q) = %d, want route %s", tc.host, tc.path, i, tc.want)
		}
	}
	if i := NewTable(routes[1:2]).Match("x", "/nope"); i != -1 {
		t.Fatalf("unmatched request matched %d", i)
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`routes:
  - name: r1
    match: {path_prefix: "no-slash", host: "http://x"}
    champion: {url: "https://c", h2c: true, timeout: -1s}
    sampling: {rate: -0.5, key: "cookie:x"}
    capture: {max_bytes: 2000000, oversize: drop}
    redaction: {remove: ["a/b"]}
  - name: r2
    match: {path_prefix: "no-slash", host: "http://x"}
    experiment: e
    champion: {url: "http://c"}
`))
	want := []string{
		`route "r1": match.path_prefix`, `route "r1": match.host`, `route "r1": experiment is required`,
		"h2c is for plain http", "champion.timeout", "sampling.rate", "sampling.key", "capture.max_bytes",
		"capture.oversize", `redaction path "a/b"`, `route "r2": same match as route "r1"`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %q:\n%v", w, err)
		}
	}
	if _, err := Parse([]byte("routes:\n  - experiment: e\n    champion: {url: http://c}\n    typo: 1\n")); err == nil {
		t.Fatal("unknown field accepted")
	}
	if _, err := Parse([]byte("routes: []\n")); err == nil {
		t.Fatal("empty routes accepted")
	}
}
