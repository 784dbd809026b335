package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Request is one generated request: its id, body and the features in it.
type Request struct {
	ID       string
	Body     []byte
	Features []float64
}

// NewRequest returns request i of a deterministic stream seeded by seed.
func NewRequest(seed uint64, i int) Request {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	x := []float64{r.NormFloat64(), r.NormFloat64(), r.NormFloat64(), r.NormFloat64()}
	for k := range x {
		x[k] = float64(int(x[k]*1000)) / 1000
	}
	id := fmt.Sprintf("req-%d-%06d", seed, i)
	body, _ := json.Marshal(map[string]any{
		"id":     id,
		"inputs": []map[string]any{{"name": "features", "shape": []int{1, 4}, "datatype": "FP64", "data": x}},
	})
	return Request{ID: id, Body: body, Features: x}
}

// Malformed returns the request with one feature missing: every demo model answers it 400.
func (r Request) Malformed() Request {
	body, _ := json.Marshal(map[string]any{
		"id":     r.ID,
		"inputs": []map[string]any{{"name": "features", "shape": []int{1, 3}, "datatype": "FP64", "data": r.Features[:3]}},
	})
	r.Body = body
	return r
}

// IsMalformed reports whether request i of seed's stream is sent malformed when a share of
// the requests is (deterministic, about share of them).
func IsMalformed(seed uint64, i int, share float64) bool {
	return share > 0 && float64((uint64(i)*0x9E3779B97F4A7C15+seed)%10000) < share*10000
}

// Option changes a traffic run.
type Option func(*options)

type options struct{ malformed float64 }

// WithMalformed sends about share of the requests malformed (see Request.Malformed).
func WithMalformed(share float64) Option { return func(o *options) { o.malformed = share } }

// Result summarises a traffic run.
type Result struct {
	Sent       int64 // requests sent
	OK         int64 // answers with status 200
	Mismatched int64 // answers whose bytes differ from what the champion itself answers
	Failed     int64 // transport errors
	Elapsed    time.Duration
}

// Traffic sends n requests to proxyURL at about rate per second (0: as fast as possible) from
// workers goroutines, and checks each answer against champion.Respond (nil: no check).
// progress, if not nil, is called after every request, never concurrently.
func Traffic(ctx context.Context, proxyURL, model string, seed uint64, n, rate, workers int, champion *Model, progress func(Result), opts ...Option) Result {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	var (
		res        Result
		next       atomic.Int64
		wg         sync.WaitGroup
		progressMu sync.Mutex
	)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	start := time.Now()
	url := proxyURL + "/v2/models/" + model + "/infer"
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if rate > 0 {
					due := start.Add(time.Duration(float64(i) / float64(rate) * float64(time.Second)))
					if d := time.Until(due); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				req := NewRequest(seed, i)
				if IsMalformed(seed, i, o.malformed) {
					req = req.Malformed()
				}
				send(ctx, client, url, req, champion, &res)
				if progress != nil {
					progressMu.Lock()
					progress(snapshot(&res, start))
					progressMu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return snapshot(&res, start)
}

func send(ctx context.Context, client *http.Client, url string, r Request, champion *Model, res *Result) {
	atomic.AddInt64(&res.Sent, 1)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(r.Body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Request-Id", r.ID)
	resp, err := client.Do(req)
	if err != nil {
		atomic.AddInt64(&res.Failed, 1)
		return
	}
	got, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		atomic.AddInt64(&res.Failed, 1)
		return
	}
	if resp.StatusCode == http.StatusOK {
		atomic.AddInt64(&res.OK, 1)
	}
	if champion != nil {
		if code, want := champion.Respond(r.Body); code != resp.StatusCode || !bytes.Equal(got, want) {
			atomic.AddInt64(&res.Mismatched, 1)
		}
	}
}

func snapshot(r *Result, start time.Time) Result {
	return Result{
		Sent: atomic.LoadInt64(&r.Sent), OK: atomic.LoadInt64(&r.OK), Mismatched: atomic.LoadInt64(&r.Mismatched),
		Failed: atomic.LoadInt64(&r.Failed), Elapsed: time.Since(start),
	}
}
