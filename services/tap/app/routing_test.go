package app

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/understudy-ml/understudy/schemas"
)

func echoChampion(t *testing.T, name string) string {
	return championServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"model_name":%q,"outputs":[{"data":[1]}],"echo":%s}`, name, orNull(b))
	})
}

func orNull(b []byte) []byte {
	if len(b) == 0 {
		return []byte("null")
	}
	return b
}

func TestRoutesSamplingAndReload(t *testing.T) { bothEngines(t, testRoutesSamplingAndReload) }

func testRoutesSamplingAndReload(t *testing.T, engine string) {
	a, b := echoChampion(t, "a"), echoChampion(t, "b")
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, routes, `routes:
  - name: a
    match: {path_prefix: /v2/models/a}
    experiment: exp-a
    champion: {url: `+a+`}
  - name: b-on-host
    match: {host: b.internal, path_prefix: /}
    experiment: exp-b
    champion: {url: `+b+`}
    sampling: {rate: 0.5, key: "header:X-User-Id"}
`)
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.RoutesFile = routes })
	send := func(host, path, user string) *http.Response {
		req, _ := http.NewRequest("POST", f.proxyURL+path, strings.NewReader(`{"inputs":[]}`))
		req.Host = host
		if user != "" {
			req.Header.Set("X-User-Id", user)
		}
		resp, _ := f.do(t, req)
		return resp
	}
	if resp := send("x", "/v2/models/a/infer", ""); resp.StatusCode != 200 {
		t.Fatalf("route a: %d", resp.StatusCode)
	}
	if resp := send("x", "/other", ""); resp.StatusCode != 404 {
		t.Fatalf("unrouted request: %d, want 404", resp.StatusCode)
	}
	// Sampling by user: each user is always in or always out, and about half are in.
	in := map[string]bool{}
	for round := range 2 {
		for u := range 40 {
			user := fmt.Sprint("user-", u)
			before := f.notCaptured(t, ReasonSampledOut)
			send("b.internal", "/predict", user)
			sampled := f.notCaptured(t, ReasonSampledOut) == before
			if round == 1 && in[user] != sampled {
				t.Fatalf("user %s sampled %v then %v", user, in[user], sampled)
			}
			in[user] = sampled
		}
	}
	kept := 0
	for _, v := range in {
		if v {
			kept++
		}
	}
	if kept < 10 || kept > 30 {
		t.Fatalf("%d of 40 users sampled at rate 0.5", kept)
	}
	evs, _ := f.events(t, 1+2*kept)
	byExp := map[string]int{}
	for _, ev := range evs {
		byExp[ev.Experiment]++
	}
	if byExp["exp-a"] != 1 || byExp["exp-b"] != 2*kept {
		t.Fatalf("events by experiment %v", byExp)
	}
	if f.notCaptured(t, ReasonNoRoute) != 1 {
		t.Fatal("unrouted request not counted")
	}

	// An invalid file is rejected with every problem, and the old routes keep serving.
	writeFile(t, routes, `routes:
  - name: bad
    experiment: ""
    champion: {url: "ftp://x", protocol: grpc}
    sampling: {rate: 2}
`)
	err := f.tap.Reload()
	for _, want := range []string{"experiment is required", "not an http(s) URL", "unknown protocol", "sampling.rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("reload error %v does not mention %q", err, want)
		}
	}
	if resp := send("x", "/v2/models/a/infer", ""); resp.StatusCode != 200 {
		t.Fatalf("after a rejected reload: %d", resp.StatusCode)
	}
	// A valid file takes effect.
	writeFile(t, routes, `routes:
  - name: all-to-b
    experiment: exp-b2
    champion: {url: `+b+`}
`)
	if err := f.tap.Reload(); err != nil {
		t.Fatal(err)
	}
	resp, body := f.do(t, mustReq("POST", f.proxyURL+"/v2/models/a/infer", `{"inputs":[]}`))
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"model_name":"b"`)) {
		t.Fatalf("after reload: %d %s", resp.StatusCode, body)
	}
}

func mustReq(method, url, body string) *http.Request {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		panic(err)
	}
	return req
}

// TestCanarySecretNeverLeaves sends a canary secret in the Authorization header, a cookie and
// two JSON fields (one removed, one hashed) and proves it appears in no event, log line or
// metric.
func TestCanarySecretNeverLeaves(t *testing.T) { bothEngines(t, testCanarySecretNeverLeaves) }

func testCanarySecretNeverLeaves(t *testing.T, engine string) {
	const canary = "CANARY-5ecr3t-4f9a"
	champion := echoChampion(t, "m")
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, routes, `routes:
  - name: pii
    experiment: e
    champion: {url: `+champion+`}
    redaction:
      remove: [/user/ssn, /echo/user/ssn]
      hash: [/user/email, /echo/user/email]
`)
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.RoutesFile = routes; c.RedactionKey = "k3y" })
	body := `{"user":{"ssn":"` + canary + `","email":"` + canary + `@x.io","age":41},"inputs":[]}`
	req := mustReq("POST", f.proxyURL+"/v2/models/m/infer", body)
	req.Header.Set("Authorization", "Bearer "+canary)
	req.Header.Set("Cookie", "session="+canary)
	resp, got := f.do(t, req)
	if resp.StatusCode != 200 || !bytes.Contains(got, []byte(canary)) {
		t.Fatalf("the caller must still get the champion's full answer: %d %s", resp.StatusCode, got)
	}
	// A non-JSON body on a redacting route cannot be redacted: it is not captured at all.
	f.do(t, mustReq("POST", f.proxyURL+"/v2/models/m/infer", "ssn="+canary))
	evs, raw := f.events(t, 1)
	for _, v := range raw {
		if bytes.Contains(v, []byte(canary)) {
			t.Fatal("canary found in an event")
		}
	}
	if !bytes.Contains(evs[0].Request.Body, []byte(`"email":"hmac-sha256:`)) || !bytes.Contains(evs[0].Request.Body, []byte(`"age":41`)) {
		t.Fatalf("redacted body = %s", evs[0].Request.Body)
	}
	if f.notCaptured(t, ReasonRedactionFailed) != 1 {
		t.Fatal("unredactable body not counted")
	}
	if strings.Contains(f.logs.String(), canary) {
		t.Fatal("canary found in logs")
	}
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if strings.Contains(mf.String(), canary) {
			t.Fatalf("canary found in metric %s", mf.GetName())
		}
	}
}

func TestOversizeSkipIsCounted(t *testing.T) { bothEngines(t, testOversizeSkipIsCounted) }

func testOversizeSkipIsCounted(t *testing.T, engine string) {
	champion := echoChampion(t, "m")
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, routes, `routes:
  - experiment: e
    champion: {url: `+champion+`}
    capture: {max_bytes: 100, oversize: skip}
`)
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.RoutesFile = routes })
	big := `{"inputs":[],"pad":"` + strings.Repeat("x", 5000) + `"}`
	resp, got := f.do(t, mustReq("POST", f.proxyURL+"/x", big))
	if resp.StatusCode != 200 || !bytes.Contains(got, []byte(strings.Repeat("x", 5000))) {
		t.Fatal("large body not proxied in full")
	}
	f.do(t, mustReq("POST", f.proxyURL+"/x", `{}`))
	evs, _ := f.events(t, 1)
	if evs[0].Request.OriginalSize != 2 {
		t.Fatalf("unexpected event %+v", evs[0].Request)
	}
	if f.notCaptured(t, ReasonTooLarge) != 1 {
		t.Fatal("oversize request not counted as too_large")
	}
}

func TestH2CUpstream(t *testing.T) {
	var proto string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proto = r.Proto
		_, _ = w.Write([]byte(`{"outputs":[{"data":[2]}]}`))
	})}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln := listen(t)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	routes := filepath.Join(t.TempDir(), "routes.yaml")
	writeFile(t, routes, "routes:\n  - experiment: e\n    champion: {url: http://"+ln.Addr().String()+", h2c: true}\n")
	f := newFixture(t, func(c *Config) { c.RoutesFile = routes; c.Engine = EngineStd })
	resp, _ := f.do(t, mustReq("POST", f.proxyURL+"/v2/models/m/infer", `{}`))
	if resp.StatusCode != 200 || proto != "HTTP/2.0" {
		t.Fatalf("status %d, upstream protocol %q", resp.StatusCode, proto)
	}
	evs, _ := f.events(t, 1)
	if !evs[0].Response.Prediction.Equal(schemas.Number(2)) {
		t.Fatalf("prediction %+v", evs[0].Response.Prediction)
	}
}

func TestLargeStreamedResponse(t *testing.T) { bothEngines(t, testLargeStreamedResponse) }

// testLargeStreamedResponse: a chunked 600 KB answer (beyond the fast engine's whole-body
// threshold and the capture limit) reaches the caller complete and is captured truncated.
func testLargeStreamedResponse(t *testing.T, engine string) {
	chunk := bytes.Repeat([]byte("0123456789"), 1000)
	champion := championServer(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-ndjson")
		for range 60 {
			_, _ = w.Write(chunk)
			w.(http.Flusher).Flush()
		}
	})
	f := newFixture(t, func(c *Config) { c.Engine = engine; c.ChampionURL = champion; c.CaptureMaxBytes = 4096 })
	resp, body := f.do(t, mustReq("POST", f.proxyURL+"/stream", `{}`))
	if resp.StatusCode != 200 || len(body) != 60*len(chunk) || !bytes.Equal(body[:len(chunk)], chunk) {
		t.Fatalf("caller got %d bytes (status %d), want %d", len(body), resp.StatusCode, 60*len(chunk))
	}
	evs, _ := f.events(t, 1)
	r := evs[0].Response
	if !r.Truncated || len(r.Body) != 4096 || r.OriginalSize != int64(60*len(chunk)) || r.ContentType != "application/x-ndjson" {
		t.Fatalf("captured response: truncated=%v len=%d original=%d type=%q", r.Truncated, len(r.Body), r.OriginalSize, r.ContentType)
	}
}
