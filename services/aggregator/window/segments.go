package window

import (
	"maps"
	"slices"
	"strings"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/segment"
)

// SegmentOf is the Key.Segment of the window of value v of segment key k.
func SegmentOf(k, v string) string { return k + "=" + v }

// SplitSegment splits a Key.Segment into its key and value; ok is false for "" (all traffic).
func SplitSegment(s string) (key, value string, ok bool) {
	return strings.Cut(s, "=")
}

// Segmenter names the segment windows each shadow's outcome of a comparison also goes to:
// per declared key, the request's value (from Comparison.Segments, unknown when absent) or
// the shadow's model version, as long as that value is among the key's top values; other
// values go to segment.Other. The top values are re-ranked by traffic every Period
// comparisons (until the first ranking, values are admitted as they come), so the windows of
// one key number at most Top + 2 (other, unknown) per shadow and base window whatever the
// cardinality of the key. A Segmenter is not safe for concurrent use.
type Segmenter struct {
	keys   []segment.Key
	tops   []*topValues
	period int
	seen   int
	out    []string
}

// topValues tracks the admitted values of one key and the traffic of the current period.
type topValues struct {
	key      string
	limit    int
	admitted map[string]string // value → its Key.Segment
	counts   map[string]uint64 // this period, at most 4 × limit values
	other    string
}

// SegmentPeriod is how many comparisons a Segmenter counts between rankings, per top value.
const SegmentPeriod = 1000

// NewSegmenter returns a segmenter for an experiment's segments (nil when it declares none).
func NewSegmenter(c segment.Config) *Segmenter {
	if len(c.Keys) == 0 {
		return nil
	}
	c.Defaults()
	s := &Segmenter{keys: c.Keys, period: SegmentPeriod * c.Top}
	for _, k := range c.Keys {
		t := &topValues{key: k.Name, limit: c.Top, counts: map[string]uint64{}, other: SegmentOf(k.Name, segment.Other)}
		t.admitted = map[string]string{schemas.SegmentUnknown: SegmentOf(k.Name, schemas.SegmentUnknown)}
		s.tops = append(s.tops, t)
	}
	return s
}

// Keys returns the declared keys, in file order.
func (s *Segmenter) Keys() []segment.Key {
	if s == nil {
		return nil
	}
	return s.keys
}

// count is called once per comparison (not per shadow) and re-ranks at the period's end.
func (s *Segmenter) count() {
	s.seen++
	if s.seen < s.period {
		return
	}
	s.seen = 0
	for _, t := range s.tops {
		t.rank()
	}
}

// segments returns the Key.Segment of every declared key for one shadow's outcome (nil when
// missing) of c, in a buffer reused by the next call. counted says whether the value's traffic
// counts toward the ranking (once per comparison: for the first shadow only).
func (s *Segmenter) segments(c *schemas.Comparison, shadow *schemas.Outcome, counted bool) []string {
	s.out = s.out[:0]
	for i, k := range s.keys {
		v := schemas.SegmentUnknown
		if k.RequestLevel() {
			for _, sv := range c.Segments {
				if sv.Key == k.Name {
					v = sv.Value
					break
				}
			}
		} else if shadow != nil && shadow.Version != "" {
			v = segment.ShadowVersion(shadow.Version)
		}
		s.out = append(s.out, s.tops[i].of(v, counted || !k.RequestLevel()))
	}
	return s.out
}

// of returns the Key.Segment of value v, admitting it while there is room.
func (t *topValues) of(v string, counted bool) string {
	if counted {
		if _, ok := t.counts[v]; ok || len(t.counts) < 4*t.limit {
			t.counts[v]++
		}
	}
	if seg, ok := t.admitted[v]; ok {
		return seg
	}
	if v == segment.Other {
		return t.other
	}
	if len(t.admitted) <= t.limit { // unknown is always there and takes no place
		seg := SegmentOf(t.key, v)
		t.admitted[v] = seg
		return seg
	}
	return t.other
}

// rank admits the period's top values by traffic (ties by value) and starts a new period.
// unknown is always admitted (it does not take a place among the top values).
func (t *topValues) rank() {
	if len(t.counts) == 0 {
		return
	}
	vs := slices.Collect(maps.Keys(t.counts))
	slices.SortFunc(vs, func(a, b string) int {
		if ca, cb := t.counts[a], t.counts[b]; ca != cb {
			if ca > cb {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	admitted := map[string]string{schemas.SegmentUnknown: SegmentOf(t.key, schemas.SegmentUnknown)}
	for _, v := range vs {
		if len(admitted) > t.limit {
			break // limit values besides unknown
		}
		if v != segment.Other {
			admitted[v] = SegmentOf(t.key, v)
		}
	}
	t.admitted, t.counts = admitted, map[string]uint64{}
}
