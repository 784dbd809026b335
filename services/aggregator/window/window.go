// Package window folds comparisons into mergeable per-window aggregates: for one experiment,
// one shadow and one time window, the counts, error kinds, latency and prediction digests of
// both sides, the digest of shadow − champion differences, agreement, and label metrics for
// both sides. Windows merge exactly (counts and sums add; digests merge), so any time range is
// answered by merging its windows, and storing windows costs in proportion to windows, not to
// comparisons. The aggregator service stores them in Postgres.
package window

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/aggregator/internal/sketch"
)

// Key names a window: of one experiment and shadow, all its traffic (Segment "") or the
// requests of one segment value (Segment "key=value", see SegmentOf), starting at Start.
type Key struct {
	Experiment string
	Shadow     string
	Segment    string
	Start      time.Time
}

// Labels are label metrics of one side: accuracy (Correct of Decided: class predictions, and
// scores in [0, 1] against labels 0 or 1 read at the experiment's decision threshold, Threshold by default) and, for scores against a numeric
// label, sums of absolute error, squared error, log loss and Brier score (log loss and Brier
// only for labels 0 or 1 and scores in [0, 1]).
type Labels struct {
	N       uint64  `json:"n"`
	Decided uint64  `json:"decided"`
	Correct uint64  `json:"correct"`
	Scored  uint64  `json:"scored"`
	AbsErr  float64 `json:"abs_err"`
	SqErr   float64 `json:"sq_err"`
	Binary  uint64  `json:"binary"`
	LogLoss float64 `json:"log_loss"`
	Brier   float64 `json:"brier"`
}

func (l *Labels) merge(o Labels) {
	l.N += o.N
	l.Decided += o.Decided
	l.Correct += o.Correct
	l.Scored += o.Scored
	l.AbsErr += o.AbsErr
	l.SqErr += o.SqErr
	l.Binary += o.Binary
	l.LogLoss += o.LogLoss
	l.Brier += o.Brier
}

// add scores one prediction against a label.
func (l *Labels) add(p, label schemas.Prediction, cmp Compare) {
	l.N++
	switch {
	case label.Kind == schemas.PredictionLabel && p.Kind == schemas.PredictionLabel:
		l.Decided++
		if p.Label == label.Label {
			l.Correct++
		}
	case label.Kind == schemas.PredictionNumber && p.Kind == schemas.PredictionNumber:
		e := p.Number - label.Number
		l.Scored++
		l.AbsErr += math.Abs(e)
		l.SqErr += e * e
		if (label.Number == 0 || label.Number == 1) && p.Number >= 0 && p.Number <= 1 {
			const eps = 1e-15
			q := min(max(p.Number, eps), 1-eps)
			l.Binary++
			l.Decided++
			if correct(p, label, cmp) {
				l.Correct++
			}
			l.LogLoss += -(label.Number*math.Log(q) + (1-label.Number)*math.Log(1-q))
			l.Brier += e * e
		}
	}
}

// Paired compares the two sides on the same labeled requests, which gives tighter confidence
// intervals for the difference than two independent samples: requests only one side got
// right (classes), and the sum and sum of squares of |shadow error| − |champion error|
// (scores).
type Paired struct {
	N            uint64  `json:"n"`
	Decided      uint64  `json:"decided"`
	ChampionOnly uint64  `json:"champion_only"`
	ShadowOnly   uint64  `json:"shadow_only"`
	Scored       uint64  `json:"scored"`
	AbsDiff      float64 `json:"abs_diff"`
	AbsDiffSq    float64 `json:"abs_diff_sq"`
}

func (p *Paired) merge(o Paired) {
	p.N += o.N
	p.Decided += o.Decided
	p.ChampionOnly += o.ChampionOnly
	p.ShadowOnly += o.ShadowOnly
	p.Scored += o.Scored
	p.AbsDiff += o.AbsDiff
	p.AbsDiffSq += o.AbsDiffSq
}

func (p *Paired) add(c, s, label schemas.Prediction, cmp Compare) {
	if decidable(c, label) && decidable(s, label) {
		p.Decided++
		cr, sr := correct(c, label, cmp), correct(s, label, cmp)
		if cr && !sr {
			p.ChampionOnly++
		}
		if sr && !cr {
			p.ShadowOnly++
		}
	}
	if label.Kind == schemas.PredictionNumber && c.Kind == schemas.PredictionNumber && s.Kind == schemas.PredictionNumber {
		d := math.Abs(s.Number-label.Number) - math.Abs(c.Number-label.Number)
		if !math.IsNaN(d) && !math.IsInf(d, 0) {
			p.Scored++
			p.AbsDiff += d
			p.AbsDiffSq += d * d
		}
	}
	p.N++
}

// Moments are the count, sum and sum of squares of per-request values: enough for a mean, its
// variance and a confidence sequence on the mean.
type Moments struct {
	N     uint64  `json:"n"`
	Sum   float64 `json:"sum"`
	SumSq float64 `json:"sum_sq"`
}

// Add adds one value; NaN and ±Inf are ignored.
func (m *Moments) Add(x float64) {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return
	}
	m.N++
	m.Sum += x
	m.SumSq += x * x
}

func (m *Moments) merge(o Moments) {
	m.N += o.N
	m.Sum += o.Sum
	m.SumSq += o.SumSq
}

// PairedErrors compares failures (schemas.Failure, one classification for both sides) on the
// requests both sides were measured on: N requests, Both failed, only the champion, only the
// shadow. A request both models reject is not the shadow's fault; the error-rate difference is
// (ShadowOnly − ChampionOnly) ÷ N.
type PairedErrors struct {
	N            uint64 `json:"n"`
	Both         uint64 `json:"both"`
	ChampionOnly uint64 `json:"champion_only"`
	ShadowOnly   uint64 `json:"shadow_only"`
}

func (p *PairedErrors) merge(o PairedErrors) {
	p.N += o.N
	p.Both += o.Both
	p.ChampionOnly += o.ChampionOnly
	p.ShadowOnly += o.ShadowOnly
}

func (p *PairedErrors) add(c, s *schemas.Outcome) {
	cf, sf := schemas.Failure(c) != "", schemas.Failure(s) != ""
	p.N++
	switch {
	case cf && sf:
		p.Both++
	case cf:
		p.ChampionOnly++
	case sf:
		p.ShadowOnly++
	}
}

// notShadowed reports whether o is a shadow call deliberately not made (schemas.NotCalled:
// outside its sample, a truncated capture, shutting down, over its rate limit, its circuit
// open, not allowed). Such requests count as coverage, by reason, never as shadow errors.
func notShadowed(o *schemas.Outcome) bool { return o.Error != nil && schemas.NotCalled(o.Error.Kind) }

// Side aggregates one side (champion or shadow) of a window.
type Side struct {
	Latency     *sketch.Digest    // microseconds
	Predictions *sketch.Digest    // numeric predictions
	Classes     sketch.Classes    // class-label predictions
	Errors      map[string]uint64 // by error kind
	NonFinite   uint64            // numeric predictions rejected as NaN or ±Inf
	Labels      Labels
	// Versions counts the side's answers by model version ("" when the producer named none),
	// at most MaxVersions of them, the rest under OtherVersions.
	Versions map[string]uint64
}

// MaxVersions bounds the model versions a window tells apart; answers of further versions
// are counted under OtherVersions.
const MaxVersions = 8

// OtherVersions counts the answers of versions beyond MaxVersions.
const OtherVersions = "(other)"

func newSide() Side {
	return Side{Latency: sketch.New(), Predictions: sketch.New(), Classes: sketch.Classes{}, Errors: map[string]uint64{}, Versions: map[string]uint64{}}
}

// countVersion adds n answers of version v to vs, keeping at most MaxVersions versions.
func countVersion(vs map[string]uint64, v string, n uint64) {
	if _, ok := vs[v]; !ok && v != OtherVersions {
		named := len(vs)
		if _, ok := vs[OtherVersions]; ok {
			named--
		}
		if named >= MaxVersions {
			v = OtherVersions
		}
	}
	vs[v] += n
}

func (s *Side) add(o *schemas.Outcome) {
	if o == nil || notShadowed(o) {
		return
	}
	_ = s.Latency.Add(float64(o.Latency.Microseconds()))
	countVersion(s.Versions, o.Version, 1)
	if kind := schemas.Failure(o); kind != "" {
		s.Errors[kind]++
	}
	switch o.Prediction.Kind {
	case schemas.PredictionNumber:
		if err := s.Predictions.Add(o.Prediction.Number); err != nil {
			s.NonFinite++
		}
	case schemas.PredictionLabel:
		s.Classes[o.Prediction.Label]++
	}
}

func (s *Side) merge(o Side) error {
	if err := s.Latency.Merge(o.Latency); err != nil {
		return err
	}
	if err := s.Predictions.Merge(o.Predictions); err != nil {
		return err
	}
	s.Classes.Merge(o.Classes)
	for k, v := range o.Errors {
		s.Errors[k] += v
	}
	s.NonFinite += o.NonFinite
	s.Labels.merge(o.Labels)
	for _, v := range slices.Sorted(maps.Keys(o.Versions)) { // sorted: which versions fit does not depend on map order
		countVersion(s.Versions, v, o.Versions[v])
	}
	return nil
}

// Window is the aggregate of one Key.
type Window struct {
	Role        string            // the shadow's role (candidate, noise_baseline), as last seen
	Total       uint64            // final comparisons (requests)
	Statuses    map[string]uint64 // final comparisons by this shadow's status (see Status)
	NotShadowed map[string]uint64 // requests this shadow was deliberately not called for, by reason
	Paired      Paired            // both sides on the same labeled requests
	Champion    Side
	Shadow      Side
	Diff        *sketch.Digest // shadow − champion, both numeric
	Compared    uint64         // both sides predicted something comparable
	Agree       uint64         // of those, equal classes or the same side of the decision threshold
	Errors      PairedErrors   // failures of both sides on the same requests
	// Per-request latency differences in milliseconds, on requests both sides answered:
	// this shadow − the champion (timed at the tap), and this shadow − the experiment's
	// noise-baseline shadow (both timed by the invoker: like for like). Empty for the baseline.
	LatencyVsChampion Moments
	LatencyVsBaseline Moments
	// Dispatch counts this shadow's calls by how they left the invoker (schemas.Dispatch*):
	// paced calls kept the champion's inter-arrival gaps; latency of the others may include
	// queueing the champion never saw.
	Dispatch map[string]uint64
}

// New returns an empty window.
func New() *Window {
	return &Window{Statuses: map[string]uint64{}, NotShadowed: map[string]uint64{}, Dispatch: map[string]uint64{}, Champion: newSide(), Shadow: newSide(), Diff: sketch.New()}
}

// Status is the join status of one request as seen by one shadow: champion_missing,
// shadow_missing (this shadow's result never came), shadow_error (this shadow failed or was
// not called) or complete. The request-level status of the comparison may differ (another
// shadow may be missing).
func Status(c schemas.Comparison, shadow *schemas.Outcome) string {
	switch {
	case c.Champion == nil:
		return schemas.StatusChampionMissing
	case shadow == nil:
		return schemas.StatusShadowMissing
	case shadow.Error != nil:
		return schemas.StatusShadowError
	}
	return schemas.StatusComplete
}

// Threshold is the decision threshold that makes two numeric predictions agree when both are
// on the same side of it (scores of a binary classifier).
const Threshold = 0.5

// Add folds one comparison's outcome of one shadow (nil when it is missing) into w. A labeled
// comparison (Label set) adds only label metrics, since its final comparison was counted
// already.
func (w *Window) Add(c schemas.Comparison, shadow *schemas.Outcome) {
	w.AddWithBaseline(c, shadow, nil, Compare{})
}

// AddWithBaseline is Add with the same request's outcome of the noise-baseline shadow (nil
// when there is none, or shadow is the baseline), for like-for-like latency, judging numeric
// predictions as cmp says.
func (w *Window) AddWithBaseline(c schemas.Comparison, shadow, baseline *schemas.Outcome, cmp Compare) {
	if shadow != nil && shadow.Role != "" {
		w.Role = shadow.Role
	}
	if c.Label != nil {
		label := c.Label.Value
		if (c.Champion != nil && c.Champion.Prediction.Kind == schemas.PredictionLabel) || (shadow != nil && shadow.Prediction.Kind == schemas.PredictionLabel) {
			label = AsClass(label)
		}
		if c.Champion != nil {
			w.Champion.Labels.add(c.Champion.Prediction, label, cmp)
		}
		if shadow != nil && shadow.Error == nil {
			w.Shadow.Labels.add(shadow.Prediction, label, cmp)
			if c.Champion != nil {
				w.Paired.add(c.Champion.Prediction, shadow.Prediction, label, cmp)
			}
		}
		return
	}
	w.Total++
	w.Statuses[Status(c, shadow)]++
	if shadow != nil && notShadowed(shadow) {
		w.NotShadowed[shadow.Error.Kind]++
	}
	if shadow != nil && shadow.Dispatch != "" {
		w.Dispatch[shadow.Dispatch]++
	}
	w.Champion.add(c.Champion)
	w.Shadow.add(shadow)
	if c.Champion == nil || shadow == nil || notShadowed(shadow) {
		return
	}
	w.Errors.add(c.Champion, shadow)
	if schemas.Failure(shadow) == "" {
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }
		if schemas.Failure(c.Champion) == "" {
			w.LatencyVsChampion.Add(ms(shadow.Latency) - ms(c.Champion.Latency))
		}
		if baseline != nil && baseline != shadow && schemas.Failure(baseline) == "" {
			w.LatencyVsBaseline.Add(ms(shadow.Latency) - ms(baseline.Latency))
		}
	}
	cp, sp := c.Champion.Prediction, shadow.Prediction
	switch {
	case cp.Kind == schemas.PredictionNumber && sp.Kind == schemas.PredictionNumber:
		if w.Diff.Add(sp.Number-cp.Number) == nil {
			w.Compared++
			if cmp.agree(cp.Number, sp.Number) {
				w.Agree++
			}
		}
	case cp.Kind == schemas.PredictionLabel && sp.Kind == schemas.PredictionLabel:
		w.Compared++
		if cp.Label == sp.Label {
			w.Agree++
		}
	}
}

// Merge adds o into w.
func (w *Window) Merge(o *Window) error {
	if o.Role != "" {
		w.Role = o.Role
	}
	w.Total += o.Total
	for k, v := range o.Statuses {
		w.Statuses[k] += v
	}
	for k, v := range o.NotShadowed {
		w.NotShadowed[k] += v
	}
	for k, v := range o.Dispatch {
		w.Dispatch[k] += v
	}
	w.Paired.merge(o.Paired)
	if err := w.Champion.merge(o.Champion); err != nil {
		return err
	}
	if err := w.Shadow.merge(o.Shadow); err != nil {
		return err
	}
	w.Compared += o.Compared
	w.Agree += o.Agree
	w.Errors.merge(o.Errors)
	w.LatencyVsChampion.merge(o.LatencyVsChampion)
	w.LatencyVsBaseline.merge(o.LatencyVsBaseline)
	return w.Diff.Merge(o.Diff)
}

// Fold folds one comparison into windows of the given width (keyed by the request's event
// time), one per shadow outcome and one for each expected shadow that has none (counted as
// shadow_missing), creating windows as needed. A comparison with no shadow outcome and no
// expected shadow goes to the window of shadow "" so that it is still counted.
func Fold(into map[Key]*Window, c schemas.Comparison, width time.Duration, expected []string, cmp Compare) {
	FoldSegments(into, c, width, expected, cmp, nil)
}

// FoldSegments is Fold that also folds each shadow's outcome into the windows of its segment
// values, as seg names them (none when seg is nil).
func FoldSegments(into map[Key]*Window, c schemas.Comparison, width time.Duration, expected []string, cmp Compare, seg *Segmenter) {
	start := c.EventTime.UTC().Truncate(width)
	var baseline *schemas.Outcome
	for i := range c.Shadows {
		if c.Shadows[i].Role == schemas.RoleNoiseBaseline {
			baseline = &c.Shadows[i]
			break
		}
	}
	counted := false
	add := func(name string, o *schemas.Outcome) {
		k := Key{Experiment: c.Experiment, Shadow: name, Start: start}
		addTo(into, k, c, o, baseline, cmp)
		if seg == nil {
			return
		}
		for _, s := range seg.segments(&c, o, !counted) {
			k.Segment = s
			addTo(into, k, c, o, baseline, cmp)
		}
		counted = true
	}
	if seg != nil {
		seg.count()
	}
	for i := range c.Shadows {
		add(c.Shadows[i].Name, &c.Shadows[i])
	}
	for _, name := range expected {
		if !hasShadow(c.Shadows, name) {
			add(name, nil)
		}
	}
	if len(c.Shadows) == 0 && len(expected) == 0 {
		add("", nil)
	}
}

func addTo(into map[Key]*Window, k Key, c schemas.Comparison, o, baseline *schemas.Outcome, cmp Compare) {
	w := into[k]
	if w == nil {
		w = New()
		into[k] = w
	}
	w.AddWithBaseline(c, o, baseline, cmp)
}

func hasShadow(os []schemas.Outcome, name string) bool {
	for i := range os {
		if os[i].Name == name {
			return true
		}
	}
	return false
}

// wire is the JSON form of a Window; digests are their full-precision binary encodings.
type wire struct {
	Role        string            `json:"role,omitempty"`
	Total       uint64            `json:"total"`
	Statuses    map[string]uint64 `json:"statuses"`
	NotShadowed map[string]uint64 `json:"not_shadowed,omitempty"`
	Paired      Paired            `json:"paired"`
	Champion    wireSide          `json:"champion"`
	Shadow      wireSide          `json:"shadow"`
	Diff        []byte            `json:"diff"`
	Compared    uint64            `json:"compared"`
	Agree       uint64            `json:"agree"`
	Errors      PairedErrors      `json:"paired_errors"`
	LatVsChamp  Moments           `json:"latency_vs_champion"`
	LatVsBase   Moments           `json:"latency_vs_baseline"`
	Dispatch    map[string]uint64 `json:"dispatch,omitempty"`
}

type wireSide struct {
	Latency     []byte            `json:"latency"`
	Predictions []byte            `json:"predictions"`
	Classes     map[string]uint64 `json:"classes"`
	Errors      map[string]uint64 `json:"errors"`
	NonFinite   uint64            `json:"non_finite"`
	Labels      Labels            `json:"labels"`
	Versions    map[string]uint64 `json:"versions,omitempty"`
}

func (s Side) wire() wireSide {
	lat, _ := s.Latency.MarshalBinary()
	pred, _ := s.Predictions.MarshalBinary()
	return wireSide{Latency: lat, Predictions: pred, Classes: s.Classes, Errors: s.Errors, NonFinite: s.NonFinite, Labels: s.Labels, Versions: s.Versions}
}

func (ws wireSide) side() (Side, error) {
	s := newSide()
	if err := s.Latency.UnmarshalBinary(ws.Latency); err != nil {
		return s, fmt.Errorf("latency: %w", err)
	}
	if err := s.Predictions.UnmarshalBinary(ws.Predictions); err != nil {
		return s, fmt.Errorf("predictions: %w", err)
	}
	s.Classes.Merge(ws.Classes)
	for k, v := range ws.Errors {
		s.Errors[k] = v
	}
	s.NonFinite, s.Labels = ws.NonFinite, ws.Labels
	for v, n := range ws.Versions {
		s.Versions[v] = n
	}
	return s, nil
}

// MarshalJSON encodes the window with full-precision digests.
func (w *Window) MarshalJSON() ([]byte, error) {
	diff, err := w.Diff.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return json.Marshal(wire{
		Role: w.Role, Total: w.Total, Statuses: w.Statuses, NotShadowed: w.NotShadowed, Paired: w.Paired, Champion: w.Champion.wire(), Shadow: w.Shadow.wire(), Diff: diff, Compared: w.Compared, Agree: w.Agree,
		Errors: w.Errors, LatVsChamp: w.LatencyVsChampion, LatVsBase: w.LatencyVsBaseline, Dispatch: w.Dispatch,
	})
}

// UnmarshalJSON decodes what MarshalJSON encoded.
func (w *Window) UnmarshalJSON(b []byte) error {
	var v wire
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	out := New()
	out.Role, out.Total, out.Compared, out.Agree, out.Paired = v.Role, v.Total, v.Compared, v.Agree, v.Paired
	out.Errors, out.LatencyVsChampion, out.LatencyVsBaseline = v.Errors, v.LatVsChamp, v.LatVsBase
	for k, n := range v.Statuses {
		out.Statuses[k] = n
	}
	for k, n := range v.NotShadowed {
		out.NotShadowed[k] = n
	}
	for k, n := range v.Dispatch {
		out.Dispatch[k] = n
	}
	var err error
	if out.Champion, err = v.Champion.side(); err != nil {
		return fmt.Errorf("champion %w", err)
	}
	if out.Shadow, err = v.Shadow.side(); err != nil {
		return fmt.Errorf("shadow %w", err)
	}
	if err := out.Diff.UnmarshalBinary(v.Diff); err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	*w = *out
	return nil
}
