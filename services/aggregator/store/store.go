// Package store keeps comparison windows in Postgres: it writes batches of windows together
// with the Kafka offsets they came from (exactly once), rolls them up into coarser widths,
// applies retention, and answers any time range by merging the coarsest windows that cover
// it; next to the windows it keeps the example requests that explain them. It owns the
// aggregator_windows, aggregator_examples, comparison_counts and consumer_offsets tables (created
// by the aggregator's migrations); it knows nothing of Kafka clients or alert rules.
package store

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/aggregator/window"
	"github.com/understudy-ml/understudy/services/platform/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrate applies the aggregator's schema migrations (windows, counts, offsets, alert states
// and history, webhook outbox) and returns the versions it applied.
func Migrate(ctx context.Context, db *pgxpool.Pool) ([]int, error) {
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return nil, err
	}
	return migrate.Apply(ctx, db, "aggregator", ms)
}

// ErrFenced is returned by Apply when a partition's stored offset is already past the start of
// the batch: another replica owns the partition now (or this batch was applied already). The
// transaction is rolled back; the caller must drop its in-memory state and seek to Offsets.
var ErrFenced = errors.New("stored offsets moved past the batch: partition owned elsewhere")

// Level is one window width kept in Postgres and how long its windows are kept.
type Level struct {
	Width     time.Duration
	Retention time.Duration
}

// DefaultLevels are the base width and its rollups: 1 minute for 7 days, 1 hour for 90 days,
// 1 day for 2 years. Batches write base windows only; rollups are recomputed from the level
// below by Rollup, so their cost does not grow with traffic.
func DefaultLevels(base time.Duration) []Level {
	return []Level{{base, 7 * 24 * time.Hour}, {time.Hour, 90 * 24 * time.Hour}, {24 * time.Hour, 730 * 24 * time.Hour}}
}

// Store reads and writes windows. It is safe for concurrent use.
type Store struct {
	db     *pgxpool.Pool
	group  string
	levels []Level // finest first; each width a multiple of the previous
}

// New returns a store for consumer group over db. levels must be finest first, each width a
// multiple of the one before (Validate checks).
func New(db *pgxpool.Pool, group string, levels []Level) *Store {
	return &Store{db: db, group: group, levels: levels}
}

// ValidateLevels reports levels that are not finest first with each width a whole multiple of
// the previous one and dividing a day (so that windows align the same way at every level).
func ValidateLevels(levels []Level) error {
	var errs []error
	if len(levels) == 0 {
		return errors.New("no window levels")
	}
	for i, l := range levels {
		switch {
		case l.Width < time.Second:
			errs = append(errs, fmt.Errorf("level %d: width %s below 1s", i, l.Width))
		case (24*time.Hour)%l.Width != 0 && l.Width%(24*time.Hour) != 0:
			errs = append(errs, fmt.Errorf("level %d: width %s does not divide a day", i, l.Width))
		case i > 0 && l.Width%levels[i-1].Width != 0:
			errs = append(errs, fmt.Errorf("level %d: width %s is not a multiple of %s", i, l.Width, levels[i-1].Width))
		}
		if l.Retention < l.Width {
			errs = append(errs, fmt.Errorf("level %d: retention %s shorter than its width", i, l.Retention))
		}
	}
	return errors.Join(errs...)
}

// Base returns the finest window width.
func (s *Store) Base() time.Duration { return s.levels[0].Width }

// Levels returns the levels, finest first.
func (s *Store) Levels() []Level { return s.levels }

// CountKey names a request-level status count: one per final comparison, whatever the number
// of shadows (status "labeled" counts labeled comparisons).
type CountKey struct {
	Experiment string
	Start      time.Time
	Status     string
}

// Offset is the range of one partition a batch consumed: First is the offset of its first
// record, Next the offset to consume after it.
type Offset struct {
	Topic     string
	Partition int32
	First     int64
	Next      int64
}

// Batch is what one transaction writes: windows at the base width, request-level counts,
// examples (each window and kind pruned back to ExamplesPerKind) and the offsets they came
// from.
type Batch struct {
	Windows         map[window.Key]*window.Window
	Counts          map[CountKey]int64
	Examples        []window.Example
	ExamplesPerKind int
	Offsets         []Offset
}

// Stats describes what Apply wrote.
type Stats struct {
	WindowRows int // window rows written, all levels
}

// Apply writes b in one transaction: the offsets first (refused with ErrFenced when a stored
// offset is already past the batch's first offset), then every base window merged into its
// stored row, with the rollup windows containing them marked dirty (see Rollup), then the
// counts. Writers of one experiment are serialized by a
// transaction-level advisory lock, so replicas owning different partitions can update the same
// window. Either all of b is stored or none of it.
func (s *Store) Apply(ctx context.Context, b Batch) (Stats, error) {
	var st Stats
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if err := s.writeOffsets(ctx, tx, b.Offsets); err != nil {
			return err
		}
		n, err := s.writeWindows(ctx, tx, b.Windows)
		if err != nil {
			return err
		}
		st.WindowRows = n
		if err := writeExamples(ctx, tx, b.Examples, b.ExamplesPerKind); err != nil {
			return err
		}
		return writeCounts(ctx, tx, b.Counts)
	})
	return st, err
}

func (s *Store) writeOffsets(ctx context.Context, tx pgx.Tx, offs []Offset) error {
	if len(offs) == 0 {
		return nil
	}
	var (
		topics       []string
		parts        []int32
		firsts, next []int64
	)
	for _, o := range offs {
		topics, parts, firsts, next = append(topics, o.Topic), append(parts, o.Partition), append(firsts, o.First), append(next, o.Next)
	}
	tag, err := tx.Exec(ctx, `
		INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset, batch_first)
		SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[], $5::bigint[])
		ON CONFLICT (consumer_group, topic, partition) DO UPDATE
			SET next_offset = excluded.next_offset, batch_first = excluded.batch_first
			WHERE consumer_offsets.next_offset <= excluded.batch_first`,
		s.group, topics, parts, next, firsts)
	if err != nil {
		return fmt.Errorf("store offsets: %w", err)
	}
	if tag.RowsAffected() != int64(len(offs)) {
		return ErrFenced
	}
	return nil
}

// markDirty marks the rollup windows (every level but the base) containing the base keys.
func (s *Store) markDirty(ctx context.Context, tx pgx.Tx, keys []window.Key) error {
	type levelKey struct {
		window.Key
		width time.Duration
	}
	dirty := map[levelKey]bool{}
	for _, k := range keys {
		for _, l := range s.levels[1:] {
			dirty[levelKey{window.Key{Experiment: k.Experiment, Shadow: k.Shadow, Segment: k.Segment, Start: k.Start.Truncate(l.Width)}, l.Width}] = true
		}
	}
	if len(dirty) == 0 {
		return nil
	}
	var (
		exps, shadows, segs []string
		widths              []int32
		starts              []time.Time
	)
	for k := range dirty {
		exps, shadows, segs = append(exps, k.Experiment), append(shadows, k.Shadow), append(segs, k.Segment)
		widths, starts = append(widths, int32(k.width/time.Second)), append(starts, k.Start)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO aggregator_dirty (experiment, shadow, segment, width_seconds, window_start)
		SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[]) ORDER BY 1, 2, 3, 4, 5
		ON CONFLICT (experiment, segment, shadow, width_seconds, window_start) DO UPDATE SET version = aggregator_dirty.version + 1`,
		exps, shadows, segs, widths, starts); err != nil {
		return fmt.Errorf("mark rollups dirty: %w", err)
	}
	return nil
}

// Rollup recomputes every dirty rollup window from the level below it, finest rollups first
// (so a day is merged from up-to-date hours), and returns how many it wrote. A window marked
// again while it was being recomputed stays dirty for the next pass. Several replicas may run
// it at once: each window is claimed with SKIP LOCKED.
func (s *Store) Rollup(ctx context.Context) (int, error) {
	n := 0
	for li := 1; li < len(s.levels); li++ {
		marks, err := s.dirtyMarks(ctx, s.levels[li].Width)
		if err != nil {
			return n, err
		}
		for _, m := range marks {
			done, err := s.rollupOne(ctx, s.levels[li].Width, s.levels[li-1].Width, m)
			if err != nil {
				return n, fmt.Errorf("roll up %s/%s%s %s at %s: %w", m.Experiment, m.Shadow, segmentSuffix(m.Segment), s.levels[li].Width, m.Start, err)
			}
			if done {
				n++
			}
		}
	}
	return n, nil
}

// dirtyMark is a marked rollup window and the version of its mark.
type dirtyMark struct {
	window.Key
	version int64
}

func (s *Store) dirtyMarks(ctx context.Context, width time.Duration) ([]dirtyMark, error) {
	rows, err := s.db.Query(ctx, `SELECT experiment, shadow, segment, window_start, version FROM aggregator_dirty WHERE width_seconds = $1 ORDER BY 1, 2, 3, 4`,
		int32(width/time.Second))
	if err != nil {
		return nil, fmt.Errorf("list dirty rollups: %w", err)
	}
	var (
		marks []dirtyMark
		m     dirtyMark
	)
	if _, err := pgx.ForEachRow(rows, []any{&m.Experiment, &m.Shadow, &m.Segment, &m.Start, &m.version}, func() error {
		m.Start = m.Start.UTC()
		marks = append(marks, m)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list dirty rollups: %w", err)
	}
	return marks, nil
}

// rollupOne recomputes one marked window of width from the windows of width below, and clears
// the mark unless it moved meanwhile; false when another replica holds the mark or it is gone.
func (s *Store) rollupOne(ctx context.Context, width, below time.Duration, m dirtyMark) (done bool, err error) {
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		key := []any{m.Experiment, m.Shadow, int32(width / time.Second), m.Start, m.Segment}
		var claimed bool
		err := tx.QueryRow(ctx, `SELECT true FROM aggregator_dirty WHERE experiment = $1 AND shadow = $2 AND width_seconds = $3 AND window_start = $4 AND segment = $5 FOR UPDATE SKIP LOCKED`,
			key...).Scan(&claimed)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		children, err := loadWindows(ctx, tx, m.Experiment, m.Shadow, exactSegment(m.Segment), below, m.Start, m.Start.Add(width))
		if err != nil {
			return err
		}
		acc := window.New()
		for _, c := range children {
			if err := acc.Merge(c.Data); err != nil {
				return err
			}
		}
		if err := upsertWindows(ctx, tx, width, []window.Key{m.Key}, []*window.Window{acc}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM aggregator_dirty WHERE experiment = $1 AND shadow = $2 AND width_seconds = $3 AND window_start = $4 AND segment = $5 AND version = $6`,
			append(key, m.version)...); err != nil {
			return err
		}
		done = true
		return nil
	})
	return done, err
}

func (s *Store) writeWindows(ctx context.Context, tx pgx.Tx, ws map[window.Key]*window.Window) (int, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	merged := make(map[window.Key]*window.Window, len(ws))
	keys := make([]window.Key, 0, len(ws))
	for k, w := range ws {
		k.Start = k.Start.UTC()
		merged[k] = w
		keys = append(keys, k)
	}
	if err := lockExperiments(ctx, tx, keys); err != nil {
		return 0, err
	}
	if err := s.markDirty(ctx, tx, keys); err != nil {
		return 0, err
	}
	base := s.levels[0].Width
	exps, shadows, segs, widths, starts := keyColumns(keys, base)
	rows, err := tx.Query(ctx, `
		SELECT w.experiment, w.shadow, w.segment, w.window_start, w.data
		FROM aggregator_windows w
		JOIN unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[]) AS k(experiment, shadow, segment, width_seconds, window_start)
		USING (experiment, shadow, segment, width_seconds, window_start)`,
		exps, shadows, segs, widths, starts)
	if err != nil {
		return 0, fmt.Errorf("load windows: %w", err)
	}
	var (
		k    window.Key
		data []byte
	)
	if _, err := pgx.ForEachRow(rows, []any{&k.Experiment, &k.Shadow, &k.Segment, &k.Start, &data}, func() error {
		var stored window.Window
		if err := json.Unmarshal(data, &stored); err != nil {
			return fmt.Errorf("decode stored window %s/%s%s at %s: %w", k.Experiment, k.Shadow, segmentSuffix(k.Segment), k.Start, err)
		}
		k.Start = k.Start.UTC()
		if err := stored.Merge(merged[k]); err != nil {
			return err
		}
		merged[k] = &stored
		return nil
	}); err != nil {
		return 0, fmt.Errorf("load windows: %w", err)
	}
	values := make([]*window.Window, len(keys))
	for i, k := range keys {
		values[i] = merged[k]
	}
	if err := upsertWindows(ctx, tx, base, keys, values); err != nil {
		return 0, err
	}
	return len(keys), nil
}

// lockExperiments serializes writers of the experiments of keys with transaction-level
// advisory locks, taken in a fixed order so that two writers never wait on each other.
func lockExperiments(ctx context.Context, tx pgx.Tx, keys []window.Key) error {
	exps := map[string]bool{}
	for _, k := range keys {
		exps[k.Experiment] = true
	}
	sorted := make([]string, 0, len(exps))
	for e := range exps {
		sorted = append(sorted, e)
	}
	sort.Strings(sorted)
	for _, e := range sorted {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('understudy-aggregator-window:' || $1, 0))`, e); err != nil {
			return fmt.Errorf("lock experiment %s: %w", e, err)
		}
	}
	return nil
}

// keyColumns turns keys of one width into the column arrays the unnest queries take.
func keyColumns(keys []window.Key, width time.Duration) (exps, shadows, segs []string, widths []int32, starts []time.Time) {
	for _, k := range keys {
		exps, shadows, segs = append(exps, k.Experiment), append(shadows, k.Shadow), append(segs, k.Segment)
		widths, starts = append(widths, int32(width/time.Second)), append(starts, k.Start)
	}
	return exps, shadows, segs, widths, starts
}

// segmentSuffix names a segment in messages: "" for all traffic, " [key=value]" otherwise.
func segmentSuffix(seg string) string {
	if seg == "" {
		return ""
	}
	return " [" + seg + "]"
}

// upsertWindows stores ws[i] as the window of keys[i] at width, replacing what was there.
func upsertWindows(ctx context.Context, tx pgx.Tx, width time.Duration, keys []window.Key, ws []*window.Window) error {
	exps, shadows, segs, widths, starts := keyColumns(keys, width)
	roles, totals, datas := make([]string, len(ws)), make([]int64, len(ws)), make([][]byte, len(ws))
	for i, w := range ws {
		b, err := json.Marshal(w)
		if err != nil {
			return fmt.Errorf("encode window: %w", err)
		}
		roles[i], totals[i], datas[i] = w.Role, int64(w.Total), b
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO aggregator_windows (experiment, shadow, segment, width_seconds, window_start, role, total, data, updated_at)
		SELECT *, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[], $6::text[], $7::bigint[], $8::bytea[])
		ON CONFLICT (experiment, segment, shadow, width_seconds, window_start) DO UPDATE
			SET role = excluded.role, total = excluded.total, data = excluded.data, updated_at = excluded.updated_at`,
		exps, shadows, segs, widths, starts, roles, totals, datas); err != nil {
		return fmt.Errorf("upsert windows: %w", err)
	}
	return nil
}

func writeCounts(ctx context.Context, tx pgx.Tx, counts map[CountKey]int64) error {
	if len(counts) == 0 {
		return nil
	}
	var (
		exps, statuses []string
		starts         []time.Time
		ns             []int64
	)
	for k, v := range counts {
		exps, starts, statuses, ns = append(exps, k.Experiment), append(starts, k.Start), append(statuses, k.Status), append(ns, v)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO comparison_counts (experiment, window_start, status, count)
		SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
		ON CONFLICT (experiment, window_start, status) DO UPDATE SET count = comparison_counts.count + excluded.count`,
		exps, starts, statuses, ns); err != nil {
		return fmt.Errorf("upsert counts: %w", err)
	}
	return nil
}

// Offsets returns the next offsets stored for the store's group, by topic and partition.
func (s *Store) Offsets(ctx context.Context) (map[string]map[int32]int64, error) {
	return StoredOffsets(ctx, s.db, s.group)
}

// Retain deletes the windows of each level older than its retention, relative to now, and
// returns how many rows went.
func (s *Store) Retain(ctx context.Context, now time.Time) (int64, error) {
	var n int64
	for _, l := range s.levels {
		tag, err := s.db.Exec(ctx, `DELETE FROM aggregator_windows WHERE width_seconds = $1 AND window_start < $2`,
			int32(l.Width/time.Second), now.Add(-l.Retention))
		if err != nil {
			return n, fmt.Errorf("retention of %s windows: %w", l.Width, err)
		}
		n += tag.RowsAffected()
	}
	// Examples explain base windows and go with them.
	if _, err := s.db.Exec(ctx, `DELETE FROM aggregator_examples WHERE window_start < $1`, now.Add(-s.levels[0].Retention)); err != nil {
		return n, fmt.Errorf("retention of examples: %w", err)
	}
	if _, err := s.db.Exec(ctx, `DELETE FROM comparison_counts WHERE window_start < $1`, now.Add(-s.levels[len(s.levels)-1].Retention)); err != nil {
		return n, fmt.Errorf("retention of counts: %w", err)
	}
	return n, nil
}
