package window

import (
	"fmt"
	"testing"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// TestSegmentWindowsSplitTheWholeExactly: each key's segment windows partition the shadow's
// traffic (their totals add up to the whole window's), values beyond the top N go to other,
// an unreadable value counts under unknown, and the shadow-version key follows each shadow.
func TestSegmentWindowsSplitTheWholeExactly(t *testing.T) {
	seg := NewSegmenter(segment.Config{Top: 2, Keys: []segment.Key{
		{Name: "region", Header: "X-Region"},
		{Name: "version", ModelVersion: segment.VersionShadow},
	}})
	ws := map[Key]*Window{}
	regions := []string{"eu", "eu", "us", "us", "ap", "eu", "", "us"}
	for i, r := range regions {
		c := cmp(fmt.Sprint(i), t0, 0.1, 0.9, "")
		c.Shadows[0].Version = []string{"7", "8"}[i%2]
		if r != "" {
			c.Segments = []schemas.SegmentValue{{Key: "region", Value: r}}
		}
		FoldSegments(ws, c, time.Minute, nil, Compare{}, seg)
	}
	whole := ws[Key{Experiment: "e", Shadow: "v7", Start: t0}]
	at := func(s string) uint64 {
		if w := ws[Key{Experiment: "e", Shadow: "v7", Segment: s, Start: t0}]; w != nil {
			return w.Total
		}
		return 0
	}
	if whole.Total != 8 {
		t.Fatalf("whole window: %d requests, want 8", whole.Total)
	}
	want := map[string]uint64{"region=eu": 3, "region=us": 3, "region=other": 1, "region=unknown": 1, "version=7": 4, "version=8": 4}
	for s, n := range want {
		if got := at(s); got != n {
			t.Errorf("%s: %d requests, want %d", s, got, n)
		}
	}
	if n := len(ws); n != 1+len(want) {
		t.Errorf("%d windows, want %d: %v", n, 1+len(want), keysOf(ws))
	}
	if w := ws[Key{Experiment: "e", Shadow: "v7", Segment: "region=eu", Start: t0}]; w.Compared != 3 || w.Agree != 0 || w.Diff.Count() != 3 {
		t.Errorf("a segment window carries every statistic: compared %d agree %d diffs %d", w.Compared, w.Agree, w.Diff.Count())
	}
}

// TestSegmenterRanksByTraffic: after a period the top values by traffic own the windows,
// whatever order they first came in.
func TestSegmenterRanksByTraffic(t *testing.T) {
	seg := NewSegmenter(segment.Config{Top: 1, Keys: []segment.Key{{Name: "k", Header: "X"}}})
	c := cmp("r", t0, 0, 0, "")
	valueOf := func(v string) string {
		c.Segments = []schemas.SegmentValue{{Key: "k", Value: v}}
		seg.count()
		return seg.segments(&c, &c.Shadows[0], true)[0]
	}
	if got := valueOf("rare"); got != "k=rare" {
		t.Fatalf("first value: %s", got)
	}
	for i := 1; i < SegmentPeriod; i++ {
		valueOf("common")
	}
	if got := valueOf("common"); got != "k=common" {
		t.Fatalf("after the ranking the common value owns the place: %s", got)
	}
	if got := valueOf("rare"); got != "k=other" {
		t.Fatalf("the rare value is other now: %s", got)
	}
	if got := valueOf(schemas.SegmentUnknown); got != "k=unknown" {
		t.Fatalf("unknown always has its window: %s", got)
	}
}

func keysOf(ws map[Key]*Window) []string {
	var out []string
	for k := range ws {
		out = append(out, k.Shadow+"/"+k.Segment)
	}
	return out
}

// BenchmarkFoldWithSegments is BenchmarkFoldWithExamples with 3 segment keys of 20 values
// each (the case): every comparison also goes to 3 segment windows.
//
//	cd services/aggregator && go test -run '^$' -bench Fold -cpu 1 ./window
func BenchmarkFoldWithSegments(b *testing.B) {
	benchFoldWithExamples(b, 3, NewSegmenter(segment.Config{Keys: []segment.Key{{Name: "k0", Header: "A"}, {Name: "k1", Header: "B"}, {Name: "k2", Pointer: "/c"}}}))
}
