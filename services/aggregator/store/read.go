package store

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/understudy-ml/understudy/schemas/apiv1"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-ml/understudy/services/aggregator/window"
)

// Querier is the part of pgx (*pgx.Conn, *pgxpool.Pool, pgx.Tx) that reads need.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// span is a half-open time interval read at one level.
type span struct {
	from, to time.Time
	width    time.Duration
}

// plan splits [from, to) into spans answered by the coarsest level that fits: whole days from
// day windows, the remaining whole hours from hour windows, the edges from base windows. from
// and to are first aligned outward to the base width. A recomputed rollup equals the merge of
// its base windows (and Range descends into the ones still dirty), so the merge of the plan
// equals the merge of every base window in the range, as long as retention has kept the base
// windows at the edges.
func (s *Store) plan(from, to time.Time) []span {
	base := s.levels[0].Width
	from = from.UTC().Truncate(base)
	if t := to.UTC().Truncate(base); t.Before(to) {
		to = t.Add(base)
	} else {
		to = t
	}
	var out []span
	var fill func(from, to time.Time, level int)
	fill = func(from, to time.Time, level int) {
		if !from.Before(to) {
			return
		}
		if level == 0 {
			out = append(out, span{from, to, base})
			return
		}
		w := s.levels[level].Width
		a := from.Truncate(w)
		if a.Before(from) {
			a = a.Add(w)
		}
		b := to.Truncate(w)
		if !a.Before(b) {
			fill(from, to, level-1)
			return
		}
		out = append(out, span{a, b, w})
		fill(from, a, level-1)
		fill(b, to, level-1)
	}
	fill(from, to, len(s.levels)-1)
	return out
}

// Window is one stored window with its key and width.
type Window struct {
	window.Key
	Width time.Duration
	Data  *window.Window
}

// Range returns, per shadow of experiment, the merge of its windows in [from, to) (see plan).
// A rollup window marked dirty (not yet recomputed by Rollup) is replaced by the finer
// windows it contains, so the answer never depends on whether the rollup pass ran. Shadows
// without windows in the range are absent.
func (s *Store) Range(ctx context.Context, experiment string, from, to time.Time) (map[string]*window.Window, error) {
	merged, err := s.rangeOf(ctx, experiment, exactSegment(""), from, to)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*window.Window, len(merged))
	for k, w := range merged {
		out[k.shadow] = w
	}
	return out, nil
}

// RangeSegments is Range for the segment windows of one segment key: per shadow, the merge
// of each value's windows in [from, to), by value (as stored: at most the key's top values,
// segment.Other and unknown per window).
func (s *Store) RangeSegments(ctx context.Context, experiment, key string, from, to time.Time) (map[string]map[string]*window.Window, error) {
	merged, err := s.rangeOf(ctx, experiment, segmentFilter{key: key}, from, to)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]*window.Window{}
	for k, w := range merged {
		_, value, _ := window.SplitSegment(k.segment)
		if out[k.shadow] == nil {
			out[k.shadow] = map[string]*window.Window{}
		}
		out[k.shadow][value] = w
	}
	return out, nil
}

// seriesKey names the windows of one shadow and segment across time.
type seriesKey struct{ shadow, segment string }

func (s *Store) rangeOf(ctx context.Context, experiment string, seg segmentFilter, from, to time.Time) (map[seriesKey]*window.Window, error) {
	dirty, err := s.dirty(ctx, experiment)
	if err != nil {
		return nil, err
	}
	out := map[seriesKey]*window.Window{}
	for _, sp := range s.plan(from, to) {
		if err := s.addSpan(ctx, experiment, "", seg, s.level(sp.width), sp.from, sp.to, dirty, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// segmentFilter selects the windows of one segment (exact; "" for all traffic) or, when key
// is set, of every value of one segment key.
type segmentFilter struct{ exact, key string }

func exactSegment(s string) segmentFilter { return segmentFilter{exact: s} }

func (f segmentFilter) matches(seg string) bool {
	if f.key == "" {
		return seg == f.exact
	}
	k, _, ok := window.SplitSegment(seg)
	return ok && k == f.key
}

type dirtyKey struct {
	seriesKey
	width time.Duration
	start time.Time
}

func (s *Store) dirty(ctx context.Context, experiment string) (map[dirtyKey]bool, error) {
	rows, err := s.db.Query(ctx, `SELECT shadow, segment, width_seconds, window_start FROM aggregator_dirty WHERE experiment = $1`, experiment)
	if err != nil {
		return nil, fmt.Errorf("load dirty rollups: %w", err)
	}
	out := map[dirtyKey]bool{}
	var (
		k     dirtyKey
		width int32
	)
	if _, err := pgx.ForEachRow(rows, []any{&k.shadow, &k.segment, &width, &k.start}, func() error {
		k.width, k.start = time.Duration(width)*time.Second, k.start.UTC()
		out[k] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load dirty rollups: %w", err)
	}
	return out, nil
}

func (s *Store) level(width time.Duration) int {
	for i, l := range s.levels {
		if l.Width == width {
			return i
		}
	}
	return 0
}

// addSpan merges the windows of level li in [from, to) (of one shadow, or all when shadow is
// empty, and the segments seg selects) into out, descending into the finer level for dirty
// windows.
func (s *Store) addSpan(ctx context.Context, experiment, shadow string, seg segmentFilter, li int, from, to time.Time, dirty map[dirtyKey]bool, out map[seriesKey]*window.Window) error {
	width := s.levels[li].Width
	ws, err := loadWindows(ctx, s.db, experiment, shadow, seg, width, from, to)
	if err != nil {
		return err
	}
	for _, w := range ws {
		sk := seriesKey{w.Shadow, w.Segment}
		if li > 0 && dirty[dirtyKey{sk, width, w.Start}] {
			continue
		}
		acc := out[sk]
		if acc == nil {
			acc = window.New()
			out[sk] = acc
		}
		if err := acc.Merge(w.Data); err != nil {
			return fmt.Errorf("merge window %s/%s%s at %s: %w", experiment, w.Shadow, segmentSuffix(w.Segment), w.Start, err)
		}
	}
	if li == 0 {
		return nil
	}
	for k := range dirty {
		if k.width != width || (shadow != "" && k.shadow != shadow) || !seg.matches(k.segment) || k.start.Before(from) || !k.start.Before(to) {
			continue
		}
		if err := s.addSpan(ctx, experiment, k.shadow, exactSegment(k.segment), li-1, k.start, k.start.Add(width), dirty, out); err != nil {
			return err
		}
	}
	return nil
}

// Series returns the windows of experiment (and shadow, unless empty) at one stored width
// whose start is in [from, to), ordered by shadow and start.
// Rollup windows may lag their base windows by one rollup pass.
func (s *Store) Series(ctx context.Context, experiment, shadow string, width time.Duration, from, to time.Time) ([]Window, error) {
	return loadWindows(ctx, s.db, experiment, shadow, exactSegment(""), width, from, to)
}

// Width returns the stored width to use for a series over [from, to) with at most maxPoints
// windows per shadow: the finest level that keeps under maxPoints, else the coarsest.
func (s *Store) Width(from, to time.Time, maxPoints int) time.Duration {
	for _, l := range s.levels {
		if to.Sub(from)/l.Width <= time.Duration(maxPoints) {
			return l.Width
		}
	}
	return s.levels[len(s.levels)-1].Width
}

func loadWindows(ctx context.Context, db Querier, experiment, shadow string, seg segmentFilter, width time.Duration, from, to time.Time) ([]Window, error) {
	rows, err := db.Query(ctx, `
		SELECT shadow, segment, window_start, data FROM aggregator_windows
		WHERE experiment = $1 AND ($2 = '' OR shadow = $2) AND width_seconds = $3 AND window_start >= $4 AND window_start < $5
			AND (($6::text = '' AND segment = $7) OR ($6 <> '' AND starts_with(segment, $6 || '=')))
		ORDER BY shadow, segment, window_start`,
		experiment, shadow, int32(width/time.Second), from, to, seg.key, seg.exact)
	if err != nil {
		return nil, fmt.Errorf("load windows: %w", err)
	}
	var (
		out  []Window
		w    Window
		data []byte
	)
	w.Experiment, w.Width = experiment, width
	if _, err := pgx.ForEachRow(rows, []any{&w.Shadow, &w.Segment, &w.Start, &data}, func() error {
		var ww window.Window
		if err := json.Unmarshal(data, &ww); err != nil {
			return fmt.Errorf("decode window %s/%s%s at %s: %w", experiment, w.Shadow, segmentSuffix(w.Segment), w.Start, err)
		}
		x := w
		x.Start, x.Data = w.Start.UTC(), &ww
		out = append(out, x)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load windows: %w", err)
	}
	return out, nil
}

// Shadow describes one shadow of an experiment as stored (and as the read API reports it).
type Shadow = apiv1.Shadow

// Experiments returns every experiment with windows, with its shadows, sorted by name. The
// comparison count is the larger of the coarsest level's (longest retention, may lag one
// rollup pass) and the base level's (current, shortest retention).
func (s *Store) Experiments(ctx context.Context) (map[string][]Shadow, error) {
	base, coarsest := int32(s.levels[0].Width/time.Second), int32(s.levels[len(s.levels)-1].Width/time.Second)
	rows, err := s.db.Query(ctx, `
		SELECT experiment, shadow, max(role), min(window_start), max(window_start) FILTER (WHERE width_seconds = $1),
			greatest(coalesce(sum(total) FILTER (WHERE width_seconds = $1), 0), coalesce(sum(total) FILTER (WHERE width_seconds = $2), 0))::bigint
		FROM aggregator_windows WHERE width_seconds IN ($1, $2) AND segment = '' GROUP BY experiment, shadow ORDER BY experiment, shadow`,
		base, coarsest)
	if err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	out := map[string][]Shadow{}
	var (
		exp string
		sh  Shadow
	)
	var last *time.Time
	if _, err := pgx.ForEachRow(rows, []any{&exp, &sh.Name, &sh.Role, &sh.First, &last, &sh.Total}, func() error {
		sh.First, sh.Last = sh.First.UTC(), sh.First.UTC()
		if last != nil {
			sh.Last = last.UTC()
		}
		out[exp] = append(out[exp], sh)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	// First is the start of each shadow's earliest data, not of its earliest rollup window.
	rows, err = s.db.Query(ctx, `SELECT experiment, shadow, width_seconds, min(window_start) FROM aggregator_windows WHERE segment = '' GROUP BY 1, 2, 3`)
	if err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	mins, err := collectMins(rows)
	if err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	for exp, shadows := range out {
		for i := range shadows {
			if first, ok := firstStart(mins[shadowKey{exp, shadows[i].Name}], s.levels); ok {
				shadows[i].First = first
			}
		}
	}
	return out, nil
}

// ExperimentNames returns the sorted names of m.
func ExperimentNames(m map[string][]Shadow) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Counts returns the request-level comparison counts of experiment over all windows, by
// status (one per final comparison whatever its number of shadows; "labeled" for labeled
// comparisons).
func Counts(ctx context.Context, db Querier, experiment string) (map[string]int64, error) {
	rows, err := db.Query(ctx, `SELECT status, sum(count)::bigint FROM comparison_counts WHERE experiment = $1 GROUP BY status`, experiment)
	if err != nil {
		return nil, fmt.Errorf("query counts: %w", err)
	}
	out := map[string]int64{}
	var (
		status string
		n      int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&status, &n}, func() error {
		out[status] = n
		return nil
	}); err != nil {
		return nil, fmt.Errorf("query counts: %w", err)
	}
	return out, nil
}

// StoredOffsets returns the next offsets stored for group, by topic and partition.
func StoredOffsets(ctx context.Context, db Querier, group string) (map[string]map[int32]int64, error) {
	rows, err := db.Query(ctx, `SELECT topic, partition, next_offset FROM consumer_offsets WHERE consumer_group = $1`, group)
	if err != nil {
		return nil, fmt.Errorf("load stored offsets: %w", err)
	}
	stored := map[string]map[int32]int64{}
	var (
		topic string
		part  int32
		off   int64
	)
	if _, err := pgx.ForEachRow(rows, []any{&topic, &part, &off}, func() error {
		if stored[topic] == nil {
			stored[topic] = map[int32]int64{}
		}
		stored[topic][part] = off
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load stored offsets: %w", err)
	}
	return stored, nil
}

// ActiveExperiments returns the experiments with base windows starting at or after since.
func (s *Store) ActiveExperiments(ctx context.Context, since time.Time) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT experiment FROM aggregator_windows WHERE width_seconds = $1 AND window_start >= $2 ORDER BY 1`,
		int32(s.levels[0].Width/time.Second), since.UTC().Truncate(s.levels[0].Width))
	if err != nil {
		return nil, fmt.Errorf("active experiments: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("active experiments: %w", err)
	}
	return out, nil
}

// FirstWindow returns the start of experiment's earliest data: the earliest base window, or,
// once base windows have expired, the earliest rollup window that still holds its data (see
// firstStart). ok is false when the experiment has no windows.
func (s *Store) FirstWindow(ctx context.Context, experiment string) (time.Time, bool, error) {
	rows, err := s.db.Query(ctx, `SELECT '', '', width_seconds, min(window_start) FROM aggregator_windows WHERE experiment = $1 AND segment = '' GROUP BY width_seconds`, experiment)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("first window: %w", err)
	}
	mins, err := collectMins(rows)
	if err != nil {
		return time.Time{}, false, fmt.Errorf("first window: %w", err)
	}
	first, ok := firstStart(mins[shadowKey{}], s.levels)
	return first, ok, nil
}

type shadowKey struct{ experiment, shadow string }

// collectMins reads rows of (experiment, shadow, width in seconds, earliest window start)
// into earliest starts by experiment and shadow, and width.
func collectMins(rows pgx.Rows) (map[shadowKey]map[time.Duration]time.Time, error) {
	out := map[shadowKey]map[time.Duration]time.Time{}
	var (
		key   shadowKey
		width int32
		start time.Time
	)
	_, err := pgx.ForEachRow(rows, []any{&key.experiment, &key.shadow, &width, &start}, func() error {
		if out[key] == nil {
			out[key] = map[time.Duration]time.Time{}
		}
		out[key][time.Duration(width)*time.Second] = start.UTC()
		return nil
	})
	return out, err
}

// firstStart returns the start of the earliest data given each level's earliest window
// start: the coarsest level's, refined by each finer level whose earliest window lies within
// the coarser one's earliest window. A rollup window starts at the start of its day or hour,
// not of the data; a finer level whose first windows have expired refines no further. levels
// are finest first, as Store holds them.
func firstStart(mins map[time.Duration]time.Time, levels []Level) (time.Time, bool) {
	var (
		first time.Time
		width time.Duration
	)
	for i := len(levels) - 1; i >= 0; i-- {
		m, ok := mins[levels[i].Width]
		switch {
		case !ok:
			continue
		case width == 0 || m.Before(first.Add(width)):
			first, width = m, levels[i].Width
		default:
			return first, true
		}
	}
	return first, width > 0
}

// SegmentKeys returns the segment keys with base or rollup windows of experiment, sorted.
func (s *Store) SegmentKeys(ctx context.Context, experiment string) ([]string, error) {
	rows, err := s.db.Query(ctx, `SELECT DISTINCT split_part(segment, '=', 1) FROM aggregator_windows WHERE experiment = $1 AND segment <> '' ORDER BY 1`, experiment)
	if err != nil {
		return nil, fmt.Errorf("segment keys: %w", err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("segment keys: %w", err)
	}
	return out, nil
}
