package app

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawExchange sends raw bytes to the tap (while reading its answer, as a client still sending
// would) and returns the status line it answers with ("" when the connection closed without
// an answer).
func rawExchange(t *testing.T, proxyURL, request string) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	go func() { _, _ = io.WriteString(c, request) }()
	line, _ := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line)
}

// TestTapRefusesWhatItCannotProxy: malformed protocol versions, oversized bodies and headers
// get a status (505, 413, 431), are counted, and never reach the champion.
func TestTapRefusesWhatItCannotProxy(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		var reached atomic.Int64
		champ := championServer(t, func(w http.ResponseWriter, r *http.Request) {
			reached.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = w.Write([]byte(championBody))
		})
		f := newFixture(t, func(c *Config) { c.Engine = engine; c.ChampionURL = champ; c.MaxBodyBytes = 1 << 20 })
		if got := rawExchange(t, f.proxyURL, "POST /v2/models/m/infer HTTP/9.9\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"); !strings.Contains(got, "505") {
			t.Errorf("HTTP/9.9: %q, want 505", got)
		}
		if engine == EngineFast {
			// The std engine streams request bodies, so it has no body limit of its own.
			got := rawExchange(t, f.proxyURL, fmt.Sprintf("POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", 2<<20, strings.Repeat("x", 2<<20)))
			if !strings.Contains(got, "413") {
				t.Errorf("2 MiB body over a 1 MiB limit: %q, want 413", got)
			}
			// An ordinary client writes the whole body before it reads: the tap must drain
			// it (lingering close) or the client sees a reset instead of the 413.
			resp, err := http.Post(f.proxyURL+"/v2/models/m/infer", "application/json", strings.NewReader(strings.Repeat("x", 4<<20)))
			if err != nil {
				t.Errorf("4 MiB body through net/http: %v, want a 413", err)
			} else {
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusRequestEntityTooLarge {
					t.Errorf("4 MiB body through net/http: %d, want 413", resp.StatusCode)
				}
			}
			if n := testutil.ToFloat64(f.tap.m.rejected.WithLabelValues(RejectBodyTooLarge)); n != 2 {
				t.Errorf("body_too_large counted %v times, want 2", n)
			}
		}
		got := rawExchange(t, f.proxyURL, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 2<<20)+"\r\nContent-Length: 2\r\n\r\n{}")
		if !strings.Contains(got, "431") {
			t.Errorf("2 MiB header: %q, want 431", got)
		}
		if n := reached.Load(); n != 0 {
			t.Errorf("the champion got %d refused requests", n)
		}
	})
}

// TestInvalidRequestIDIsProxiedNotCaptured: a caller's X-Request-Id that cannot serve as a
// key (not UTF-8, too long) still gets the champion's answer; the request is counted, not
// captured.
func TestInvalidRequestIDIsProxiedNotCaptured(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		champ := championServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = w.Write([]byte(championBody))
		})
		f := newFixture(t, func(c *Config) { c.Engine = engine; c.ChampionURL = champ })
		for _, id := range []string{"r\xff\xfe", strings.Repeat("x", 300)} {
			req, _ := http.NewRequest("POST", f.proxyURL+"/v2/models/m/infer", strings.NewReader(`{}`))
			req.Header.Set("X-Request-Id", id)
			resp, body := f.do(t, req)
			if resp.StatusCode != 200 || string(body) != championBody {
				t.Fatalf("caller got %d %q", resp.StatusCode, body)
			}
		}
		req, _ := http.NewRequest("POST", f.proxyURL+"/v2/models/m/infer", strings.NewReader(`{}`))
		req.Header.Set("X-Request-Id", "good-1")
		f.do(t, req)
		evs, _ := f.events(t, 1)
		if evs[0].RequestID != "good-1" {
			t.Fatalf("captured %q, want only good-1", evs[0].RequestID)
		}
		if n := f.notCaptured(t, ReasonInvalidRequestID); n != 2 {
			t.Errorf("invalid_request_id counted %v, want 2", n)
		}
	})
}

// TestStreamingOutlivesTheRouteTimeout: the route timeout bounds the time to the first
// response byte; a response that starts in time may stream for longer (fast engine:
// proxy.stream-timeout; std: the route timeout is a response-header timeout).
func TestStreamingOutlivesTheRouteTimeout(t *testing.T) {
	bothEngines(t, func(t *testing.T, engine string) {
		champ := championServer(t, func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 6 {
				_, _ = fmt.Fprintf(w, "data: %d\n\n", i)
				w.(http.Flusher).Flush()
				time.Sleep(50 * time.Millisecond)
			}
		})
		routes := t.TempDir() + "/routes.yaml"
		writeFile(t, routes, "routes:\n  - name: s\n    match: {path_prefix: /}\n    experiment: e\n    champion: {url: "+champ+", timeout: 100ms}\n")
		f := newFixture(t, func(c *Config) { c.Engine = engine; c.RoutesFile = routes })
		req, _ := http.NewRequest("POST", f.proxyURL+"/v1/stream", strings.NewReader(`{}`))
		resp, body := f.do(t, req)
		if resp.StatusCode != 200 || strings.Count(string(body), "data:") != 6 {
			t.Fatalf("caller got %d, %d of 6 chunks", resp.StatusCode, strings.Count(string(body), "data:"))
		}
	})
}

// TestSlowClientsAreDisconnected: a caller that never finishes its request headers is
// dropped after proxy.read-timeout (fast engine; the std engine has a 10 s header timeout).
func TestSlowClientsAreDisconnected(t *testing.T) {
	f := newFixture(t, func(c *Config) { c.Engine = EngineFast; c.ReadTimeout = 200 * time.Millisecond })
	c, err := net.Dial("tcp", strings.TrimPrefix(f.proxyURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_, _ = io.WriteString(c, "POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n")
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	_, err = io.ReadAll(c)
	if err != nil || time.Since(start) > 3*time.Second {
		t.Fatalf("slow connection not closed by the tap: %v after %s", err, time.Since(start))
	}
}
