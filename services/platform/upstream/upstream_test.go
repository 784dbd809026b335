package upstream

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// rawServer answers each request on a connection with respond, then keeps or closes the
// connection as respond says. It counts the requests it read.
type rawServer struct {
	ln       net.Listener
	requests atomic.Int64
}

func newRawServer(t *testing.T, respond func(n int64, w *bufio.Writer) (keep bool)) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{ln: ln}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = c.Close() }()
				br, bw := bufio.NewReader(c), bufio.NewWriter(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					n := s.requests.Add(1)
					keep := respond(n, bw)
					_ = bw.Flush()
					if !keep {
						return
					}
				}
			}()
		}
	}()
	return s
}

func ok(w *bufio.Writer) { _, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") }

func post(t *testing.T, c *fasthttp.HostClient, timeout time.Duration) (int, string, error) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + c.Addr + "/v2/models/m/infer")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetBodyString(`{"inputs":[]}`)
	err := c.DoTimeout(req, resp, timeout)
	return resp.StatusCode(), string(resp.Body()), err
}

// TestIdleConnectionClosedByServerIsRoutine: a server that closes idle keep-alive connections
// (as uvicorn does after 5 s) or closes after an error response without saying so costs the
// caller nothing: the POST goes out once, on a fresh connection.
func TestIdleConnectionClosedByServerIsRoutine(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func(n int64, w *bufio.Writer) bool
	}{
		{"idle close", func(_ int64, w *bufio.Writer) bool { ok(w); return false }},
		{"close after 500", func(n int64, w *bufio.Writer) bool {
			if n%2 == 1 {
				_, _ = w.WriteString("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
				return false
			}
			ok(w)
			return true
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newRawServer(t, tc.respond)
			c := NewHostClient(Config{Addr: s.ln.Addr().String(), IdleTimeout: time.Minute})
			for i := range 6 {
				time.Sleep(20 * time.Millisecond) // let the server's FIN arrive
				status, _, err := post(t, c, time.Second)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if want := 200; tc.name == "close after 500" && i%2 == 0 {
					want = 500
					if status != want {
						t.Fatalf("request %d: status %d, want %d", i, status, want)
					}
				} else if status != want {
					t.Fatalf("request %d: status %d, want %d", i, status, want)
				}
			}
			if n := s.requests.Load(); n != 6 {
				t.Fatalf("server saw %d requests, want 6 (no request sent twice)", n)
			}
		})
	}
}

// TestNoRetryOnceTheRequestWasSent: a server that reads the request and closes without an
// answer gets it once, whatever the method: the caller sees the error.
func TestNoRetryOnceTheRequestWasSent(t *testing.T) {
	for _, method := range []string{fasthttp.MethodGet, fasthttp.MethodPost} {
		t.Run(method, func(t *testing.T) {
			s := newRawServer(t, func(int64, *bufio.Writer) bool { return false })
			c := NewHostClient(Config{Addr: s.ln.Addr().String()})
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			req.SetRequestURI("http://" + c.Addr + "/x")
			req.Header.SetMethod(method)
			err := c.DoTimeout(req, resp, time.Second)
			if err == nil {
				t.Fatal("no error from a server that never answered")
			}
			if n := s.requests.Load(); n != 1 {
				t.Fatalf("server saw %d requests, want 1", n)
			}
		})
	}
}

// TestStreamTimeoutIsSeparateFromTheHeaderTimeout: a response whose first byte comes within
// the header timeout may stream for up to the stream timeout; one whose first byte does not
// fails with ErrTimeout.
func TestStreamTimeoutIsSeparateFromTheHeaderTimeout(t *testing.T) {
	s := newRawServer(t, func(n int64, w *bufio.Writer) bool {
		if n == 2 {
			time.Sleep(300 * time.Millisecond)
		}
		_, _ = w.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
		for i := range 5 {
			_ = w.Flush()
			time.Sleep(60 * time.Millisecond)
			_, _ = fmt.Fprint(w, i)
		}
		return true
	})
	c := NewHostClient(Config{Addr: s.ln.Addr().String(), StreamTimeout: 5 * time.Second})
	status, body, err := post(t, c, 150*time.Millisecond)
	if err != nil || status != 200 || body != "01234" {
		t.Fatalf("streamed answer: %d %q %v", status, body, err)
	}
	if _, _, err := post(t, c, 150*time.Millisecond); !errors.Is(err, fasthttp.ErrTimeout) {
		t.Fatalf("late first byte: %v, want a timeout", err)
	}
}

func TestStaleCheckKeepsUnreadBytesOut(t *testing.T) {
	// A server that sends an unsolicited response on an idle connection (a late 408) must not
	// have it read as the answer to the next request.
	s := newRawServer(t, func(n int64, w *bufio.Writer) bool {
		ok(w)
		if n == 1 {
			_ = w.Flush()
			time.Sleep(5 * time.Millisecond) // after the client has read its answer
			_, _ = w.WriteString("HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
		}
		return true
	})
	c := NewHostClient(Config{Addr: s.ln.Addr().String()})
	for i := range 2 {
		time.Sleep(20 * time.Millisecond)
		status, body, err := post(t, c, time.Second)
		if err != nil || status != 200 || !strings.HasPrefix(body, "ok") {
			t.Fatalf("request %d: %d %q %v", i, status, body, err)
		}
	}
}

// TestNoReuseAfterA5xx: a server that closes the connection a moment after a 500 (as uvicorn
// does, without Connection: close) must not get the next request on that connection, even
// when the client is quicker than the server's FIN: fasthttp and net/http alike.
func TestNoReuseAfterA5xx(t *testing.T) {
	respond := func(n int64, w *bufio.Writer) bool {
		if n%2 == 1 {
			_, _ = w.WriteString("HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
			_ = w.Flush()
			time.Sleep(100 * time.Millisecond) // the FIN comes late
			return false
		}
		ok(w)
		return true
	}
	t.Run("fasthttp", func(t *testing.T) {
		s := newRawServer(t, respond)
		c := NewHostClient(Config{Addr: s.ln.Addr().String(), IdleTimeout: time.Minute})
		for i := range 6 {
			status, _, err := post(t, c, time.Second)
			if err != nil || status != 500+(i%2)*-300 {
				t.Fatalf("request %d: %d %v", i, status, err)
			}
		}
	})
	t.Run("net/http", func(t *testing.T) {
		s := newRawServer(t, respond)
		client := &http.Client{Transport: &http.Transport{DialContext: DialContext(time.Second)}}
		for i := range 6 {
			resp, err := client.Post("http://"+s.ln.Addr().String()+"/infer", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatalf("request %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if want := 500 + (i%2)*-300; resp.StatusCode != want {
				t.Fatalf("request %d: %d, want %d", i, resp.StatusCode, want)
			}
		}
	})
}

func TestTargetDefaultsThePort(t *testing.T) {
	for raw, want := range map[string]string{
		"http://m:8080/v2": "m:8080", "http://m/v2": "m:80", "https://m/v2": "m:443", "https://[::1]:9/": "[::1]:9",
	} {
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatal(err)
		}
		if addr, tls := Target(u); addr != want || tls != (u.Scheme == "https") {
			t.Errorf("Target(%s) = %s, %v; want %s, %v", raw, addr, tls, want, u.Scheme == "https")
		}
	}
}

// TestBusyPoolWaitsForAConnection: with every connection in use, a request waits for one to
// come free (within its timeout) instead of failing at once with ErrNoFreeConns.
func TestBusyPoolWaitsForAConnection(t *testing.T) {
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(200 * time.Millisecond)
		_, _ = w.Write([]byte("ok"))
	}), ReadHeaderTimeout: time.Second}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	c := NewHostClient(Config{Addr: ln.Addr().String(), MaxConns: 1})
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI("http://" + ln.Addr().String() + "/")
			errs <- c.DoTimeout(req, resp, 2*time.Second)
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("a request on a busy pool of one connection: %v, want it to wait its turn", err)
		}
	}
	c.CloseIdleConnections()
}
