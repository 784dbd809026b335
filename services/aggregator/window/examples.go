package window

import (
	"hash/fnv"
	"math"
	"sort"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/schemas/apiv1"
)

// Example kinds (apiv1's): the requests that explain a window's numbers.
const (
	// ExampleDifference: the largest |shadow − champion| of numeric predictions (score: that
	// difference). Identical answers are never examples of a difference.
	ExampleDifference = apiv1.ExampleDifference
	// ExampleFlip: the decision changed, judged as the window's agreement judges it: another
	// class, or a score on the other side of the threshold or beyond the tolerance (score:
	// |difference| for numbers, the sample score for classes).
	ExampleFlip = apiv1.ExampleFlip
	// ExampleShadowError: the shadow failed (an error or a non-2xx answer) where the champion
	// answered, with the shadow's full error payload.
	ExampleShadowError = apiv1.ExampleShadowError
	// ExampleChampionError: the champion failed where the shadow answered.
	ExampleChampionError = apiv1.ExampleChampionError
	// ExampleOneRight: a labeled request exactly one of the two models got right.
	ExampleOneRight = apiv1.ExampleOneRight
	// ExampleSample: a uniform sample of the requests both models answered.
	ExampleSample = apiv1.ExampleSample
)

// ExampleKinds lists every kind, in the order reports show them.
var ExampleKinds = apiv1.ExampleKinds

// Example is one request kept to explain a window: the comparison with only the champion and
// one shadow's outcome, the kind it exemplifies and its score (higher explains more).
type Example struct {
	Key        Key
	Kind       string
	Score      float64
	Comparison schemas.Comparison // Shadows holds exactly the example's shadow
}

// SampleScore is the score of kinds without a magnitude: a hash of the request id in [0, 1).
// Keeping the k highest of a uniform hash is a uniform sample of k that every replica and every
// replay of the same records picks alike, and that merges across batches by keeping the top k.
func SampleScore(requestID string) float64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(requestID))
	return float64(h.Sum64()>>11) / (1 << 53)
}

type exampleKey struct {
	Key
	kind string
}

// Picker keeps, per window (experiment, shadow, start at width) and kind, the k examples with
// the highest scores. It is not safe for concurrent use.
type Picker struct {
	k     int
	width time.Duration
	sets  map[exampleKey][]Example
}

// NewPicker returns a picker of k examples per window and kind (k ≤ 0: none).
func NewPicker(k int, width time.Duration) *Picker {
	return &Picker{k: k, width: width, sets: map[exampleKey][]Example{}}
}

// Add considers every shadow outcome of c as an example of each kind it qualifies for. Calls
// not made (outside the sample, circuit open, ...) and missing shadows are coverage, not
// examples. Unlabeled comparisons give every kind but one_right; labeled ones only one_right.
func (p *Picker) Add(c schemas.Comparison, cmp Compare) {
	if p.k <= 0 || c.Champion == nil {
		return
	}
	for i := range c.Shadows {
		s := &c.Shadows[i]
		if notShadowed(s) {
			continue
		}
		for _, q := range qualify(c, s, cmp) {
			p.offer(c, s, q.kind, q.score)
		}
	}
}

type qualified struct {
	kind  string
	score float64
}

// qualify returns the kinds the pair (champion, s) of c exemplifies, with their scores.
func qualify(c schemas.Comparison, s *schemas.Outcome, cmp Compare) []qualified {
	sample := SampleScore(c.RequestID)
	cf, sf := schemas.Failure(c.Champion), schemas.Failure(s)
	if c.Label != nil {
		if cf != "" || sf != "" {
			return nil
		}
		label := c.Label.Value
		if c.Champion.Prediction.Kind == schemas.PredictionLabel || s.Prediction.Kind == schemas.PredictionLabel {
			label = AsClass(label)
		}
		cp, sp := c.Champion.Prediction, s.Prediction
		if decidable(cp, label) && decidable(sp, label) && correct(cp, label, cmp) != correct(sp, label, cmp) {
			return []qualified{{ExampleOneRight, sample}}
		}
		return nil
	}
	switch {
	case sf != "" && cf == "":
		return []qualified{{ExampleShadowError, sample}}
	case cf != "" && sf == "":
		return []qualified{{ExampleChampionError, sample}}
	case cf != "" || sf != "":
		return nil
	}
	out := []qualified{{ExampleSample, sample}}
	cp, sp := c.Champion.Prediction, s.Prediction
	switch {
	case cp.Kind == schemas.PredictionNumber && sp.Kind == schemas.PredictionNumber:
		d := math.Abs(sp.Number - cp.Number)
		if math.IsNaN(d) || math.IsInf(d, 0) {
			break
		}
		if d > 0 {
			out = append(out, qualified{ExampleDifference, d})
		}
		if !cmp.agree(cp.Number, sp.Number) {
			out = append(out, qualified{ExampleFlip, d})
		}
	case cp.Kind == schemas.PredictionLabel && sp.Kind == schemas.PredictionLabel:
		if cp.Label != sp.Label {
			out = append(out, qualified{ExampleFlip, sample})
		}
	}
	return out
}

// offer keeps the example when it is among the k best of its set so far (ties: the smaller
// request id, so the choice does not depend on arrival order).
func (p *Picker) offer(c schemas.Comparison, s *schemas.Outcome, kind string, score float64) {
	k := exampleKey{Key{Experiment: c.Experiment, Shadow: s.Name, Start: c.EventTime.UTC().Truncate(p.width)}, kind}
	set := p.sets[k]
	if len(set) == p.k && !better(score, c.RequestID, set[len(set)-1]) {
		return
	}
	one := c
	one.Shadows = []schemas.Outcome{*s}
	ex := Example{Key: k.Key, Kind: kind, Score: score, Comparison: one}
	i := sort.Search(len(set), func(i int) bool { return better(score, c.RequestID, set[i]) })
	set = append(set, Example{})
	copy(set[i+1:], set[i:])
	set[i] = ex
	if len(set) > p.k {
		set = set[:p.k]
	}
	p.sets[k] = set
}

// better reports whether (score, id) ranks before e.
func better(score float64, id string, e Example) bool {
	if score != e.Score {
		return score > e.Score
	}
	return id < e.Comparison.RequestID
}

// Examples returns the kept examples, by window, kind and rank.
func (p *Picker) Examples() []Example {
	keys := make([]exampleKey, 0, len(p.sets))
	for k := range p.sets {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		x, y := keys[a], keys[b]
		switch {
		case x.Experiment != y.Experiment:
			return x.Experiment < y.Experiment
		case x.Shadow != y.Shadow:
			return x.Shadow < y.Shadow
		case !x.Start.Equal(y.Start):
			return x.Start.Before(y.Start)
		}
		return x.kind < y.kind
	})
	var out []Example
	for _, k := range keys {
		out = append(out, p.sets[k]...)
	}
	return out
}
