package app

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
)

// BenchmarkPendingJoinMemory reports the heap bytes one pending join holds (a champion event
// waiting for its shadow: UUID request id, numeric prediction, expiry index entries) and one
// remembered emitted id, measured over 200,000 of each after a GC; "bodies" keeps a 300-byte
// request and a 150-byte response body (comparison.body-limit 1 KiB), "no-bodies" keeps none.
//
//	cd services/joiner && go test -run '^$' -bench PendingJoinMemory ./app
func BenchmarkPendingJoinMemory(b *testing.B) {
	b.Run("no-bodies", func(b *testing.B) { pendingJoinMemory(b, 0) })
	b.Run("bodies", func(b *testing.B) { pendingJoinMemory(b, 1024) })
}

func pendingJoinMemory(b *testing.B, bodyLimit int) {
	const n = 200000
	req, resp := []byte(strings.Repeat("r", 300)), []byte(strings.Repeat("p", 150))
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for range b.N {
		pol := testPolicy([]string{"candidate"}, time.Minute, 5*time.Second)
		pol.bodyLimit = bodyLimit
		j := newJoinState(pol)
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("0193a5c2-7e1f-7b3c-9d4e-%012d", i)
		}
		before := heap()
		for i, id := range ids {
			j.addChampion(int32(i%8), schemas.InferenceEvent{
				RequestID: id, Experiment: "fraud-v7", EventTime: t0, Model: schemas.ModelRef{Name: "fraud", Version: "6"},
				Request:  schemas.HTTPRequest{Body: req},
				Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.87), Body: resp}, Latency: time.Millisecond,
			}, t0)
		}
		j.commit()
		pending := heap()
		for i, id := range ids {
			j.addShadow(int32(i%8), schemas.ShadowResult{
				RequestID: id, Experiment: "fraud-v7", Shadow: "candidate", EventTime: t0,
				Response: schemas.HTTPResponse{Status: 200, Prediction: schemas.Number(0.91)},
			}, t0)
		}
		j.commit()
		emitted := heap()
		if j.size() != 0 {
			b.Fatalf("%d joins still pending", j.size())
		}
		b.ReportMetric(float64(pending-before)/n, "B/pending-join")
		b.ReportMetric(float64(int64(emitted)-int64(before))/n, "B/emitted-id")
		runtime.KeepAlive(ids)
		runtime.KeepAlive(j)
	}
}
