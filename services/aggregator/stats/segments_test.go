package stats

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// TestRankSegmentsFindsWhereTheCandidateDiffers: a candidate that differs only where feature
// 0 is at least 1 ranks that segment first, marked as differing from the noise floor; no other
// segment and no segment of the identical copy is marked; the contributions add up to the
// overall disagreement; values beyond the top are merged into other.
func TestRankSegmentsFindsWhereTheCandidateDiffers(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	seg := window.NewSegmenter(segment.Config{Top: 3, Keys: []segment.Key{{Name: "f0", Pointer: "/x", Buckets: []float64{0, 1}}, {Name: "user", Header: "X-User"}}})
	ws := map[window.Key]*window.Window{}
	at := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	for i := range 6000 {
		x := r.NormFloat64()
		champ := r.Float64()
		cand := champ
		if x >= 1 {
			cand = 1 - champ // the candidate differs on this segment only
		}
		c := schemas.Comparison{
			RequestID: fmt.Sprint(i), Experiment: "e", EventTime: at, Status: schemas.StatusComplete,
			Champion: &schemas.Outcome{Prediction: schemas.Number(champ), Latency: time.Millisecond},
			Shadows: []schemas.Outcome{
				{Name: "cand", Role: schemas.RoleCandidate, Prediction: schemas.Number(cand), Latency: time.Millisecond},
				{Name: "copy", Role: schemas.RoleNoiseBaseline, Prediction: schemas.Number(champ), Latency: time.Millisecond},
			},
			Segments: []schemas.SegmentValue{{Key: "f0", Value: segment.Bucket([]float64{0, 1}, x)}, {Key: "user", Value: fmt.Sprint("u", r.IntN(10))}},
		}
		window.FoldSegments(ws, c, time.Minute, nil, window.Compare{}, seg)
	}
	byKey := func(key string) map[string]map[string]*window.Window {
		out := map[string]map[string]*window.Window{}
		for k, w := range ws {
			if kk, v, ok := window.SplitSegment(k.Segment); ok && kk == key {
				if out[k.Shadow] == nil {
					out[k.Shadow] = map[string]*window.Window{}
				}
				out[k.Shadow][v] = w
			}
		}
		return out
	}
	rank := RankSegments(byKey("f0"), MetricDisagreement, 20, 0.05, DefaultOptions())
	if len(rank) != 2 || rank[0].Shadow != "cand" || rank[0].Baseline != "copy" || rank[1].Shadow != "copy" {
		t.Fatalf("rankings %+v", rank)
	}
	cand := rank[0]
	if cand.Rows[0].Value != ">= 1" || !cand.Rows[0].Differs {
		t.Fatalf("first row %+v, want >= 1 marked as differing", cand.Rows[0])
	}
	var sum float64
	for i, row := range cand.Rows {
		if i > 0 && row.Differs {
			t.Errorf("row %s marked as differing: %+v", row.Value, row.Contribution)
		}
		sum += row.Contribution.Value
	}
	if math.Abs(sum-cand.Overall.Value) > 1e-9 {
		t.Errorf("contributions add up to %v, overall %v", sum, cand.Overall.Value)
	}
	for _, row := range rank[1].Rows {
		if row.Differs {
			t.Errorf("the identical copy differs in %s", row.Value)
		}
	}
	users := RankSegments(byKey("user"), MetricDisagreement, 2, 0.05, DefaultOptions())
	if n := len(users[0].Rows); n != 3 {
		t.Errorf("top 2 of the stored values plus other: %d rows", n)
	}
	var requests uint64
	for _, row := range users[0].Rows {
		requests += row.Requests
	}
	if requests != 6000 {
		t.Errorf("rows hold %d requests, want 6000", requests)
	}
}
