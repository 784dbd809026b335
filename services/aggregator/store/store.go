// Package store keeps comparison windows in Postgres: it writes batches of windows together
// with the Kafka offsets they came from (exactly once), rolls them up into coarser widths,
// applies retention, and answers any time range by merging the coarsest windows that cover
// it. It owns the aggregator_windows, comparison_counts and consumer_offsets tables (created
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

// Batch is what one transaction writes: windows at the base width, request-level counts and
// the offsets they came from.
type Batch struct {
	Windows map[window.Key]*window.Window
	Counts  map[CountKey]int64
	Offsets []Offset
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

type levelKey struct {
	window.Key
	width time.Duration
}

// markDirty marks the rollup windows (every level but the base) containing the base keys.
func (s *Store) markDirty(ctx context.Context, tx pgx.Tx, keys []levelKey) error {
	dirty := map[levelKey]bool{}
	for _, k := range keys {
		for _, l := range s.levels[1:] {
			dirty[levelKey{window.Key{Experiment: k.Experiment, Shadow: k.Shadow, Start: k.Start.Truncate(l.Width)}, l.Width}] = true
		}
	}
	if len(dirty) == 0 {
		return nil
	}
	var (
		exps, shadows []string
		widths        []int32
		starts        []time.Time
	)
	for k := range dirty {
		exps, shadows, widths, starts = append(exps, k.Experiment), append(shadows, k.Shadow), append(widths, int32(k.width/time.Second)), append(starts, k.Start)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO aggregator_dirty (experiment, shadow, width_seconds, window_start)
		SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[]) ORDER BY 1, 2, 3, 4
		ON CONFLICT (experiment, shadow, width_seconds, window_start) DO UPDATE SET version = aggregator_dirty.version + 1`,
		exps, shadows, widths, starts); err != nil {
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
		l, below := s.levels[li], s.levels[li-1]
		rows, err := s.db.Query(ctx, `SELECT experiment, shadow, window_start, version FROM aggregator_dirty WHERE width_seconds = $1 ORDER BY 1, 2, 3`,
			int32(l.Width/time.Second))
		if err != nil {
			return n, fmt.Errorf("list dirty rollups: %w", err)
		}
		type mark struct {
			exp, shadow string
			start       time.Time
			version     int64
		}
		var marks []mark
		var m mark
		if _, err := pgx.ForEachRow(rows, []any{&m.exp, &m.shadow, &m.start, &m.version}, func() error {
			marks = append(marks, m)
			return nil
		}); err != nil {
			return n, fmt.Errorf("list dirty rollups: %w", err)
		}
		for _, m := range marks {
			err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
				var claimed bool
				if err := tx.QueryRow(ctx, `SELECT true FROM aggregator_dirty WHERE experiment = $1 AND shadow = $2 AND width_seconds = $3 AND window_start = $4 FOR UPDATE SKIP LOCKED`,
					m.exp, m.shadow, int32(l.Width/time.Second), m.start).Scan(&claimed); err != nil {
					if errors.Is(err, pgx.ErrNoRows) {
						return nil // done or claimed by another replica
					}
					return err
				}
				children, err := loadWindows(ctx, tx, m.exp, m.shadow, below.Width, m.start, m.start.Add(l.Width))
				if err != nil {
					return err
				}
				acc := window.New()
				for _, c := range children {
					if err := acc.Merge(c.Data); err != nil {
						return err
					}
				}
				b, err := json.Marshal(acc)
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, `
					INSERT INTO aggregator_windows (experiment, shadow, width_seconds, window_start, role, total, data, updated_at)
					VALUES ($1, $2, $3, $4, $5, $6, $7, now())
					ON CONFLICT (experiment, shadow, width_seconds, window_start) DO UPDATE
						SET role = excluded.role, total = excluded.total, data = excluded.data, updated_at = excluded.updated_at`,
					m.exp, m.shadow, int32(l.Width/time.Second), m.start, acc.Role, int64(acc.Total), b); err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `DELETE FROM aggregator_dirty WHERE experiment = $1 AND shadow = $2 AND width_seconds = $3 AND window_start = $4 AND version = $5`,
					m.exp, m.shadow, int32(l.Width/time.Second), m.start, m.version)
				n++
				return err
			})
			if err != nil {
				return n, fmt.Errorf("roll up %s/%s %s at %s: %w", m.exp, m.shadow, l.Width, m.start, err)
			}
		}
	}
	return n, nil
}

func (s *Store) writeWindows(ctx context.Context, tx pgx.Tx, ws map[window.Key]*window.Window) (int, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	rolled := make(map[levelKey]*window.Window, len(ws))
	for k, w := range ws {
		rolled[levelKey{window.Key{Experiment: k.Experiment, Shadow: k.Shadow, Start: k.Start.UTC()}, s.levels[0].Width}] = w
	}
	keys := make([]levelKey, 0, len(rolled))
	exps := map[string]bool{}
	for k := range rolled {
		keys = append(keys, k)
		exps[k.Experiment] = true
	}
	sortedExps := make([]string, 0, len(exps))
	for e := range exps {
		sortedExps = append(sortedExps, e)
	}
	sort.Strings(sortedExps)
	// Serialize writers per experiment, in a fixed order so two never wait on each other.
	for _, e := range sortedExps {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtextextended('understudy-aggregator-window:' || $1, 0))`, e); err != nil {
			return 0, fmt.Errorf("lock experiment %s: %w", e, err)
		}
	}
	var (
		kexp, kshadow []string
		kwidth        []int32
		kstart        []time.Time
	)
	for _, k := range keys {
		kexp, kshadow, kwidth, kstart = append(kexp, k.Experiment), append(kshadow, k.Shadow), append(kwidth, int32(k.width/time.Second)), append(kstart, k.Start)
	}
	if err := s.markDirty(ctx, tx, keys); err != nil {
		return 0, err
	}
	rows, err := tx.Query(ctx, `
		SELECT w.experiment, w.shadow, w.width_seconds, w.window_start, w.data
		FROM aggregator_windows w
		JOIN unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[]) AS k(experiment, shadow, width_seconds, window_start)
		USING (experiment, shadow, width_seconds, window_start)`,
		kexp, kshadow, kwidth, kstart)
	if err != nil {
		return 0, fmt.Errorf("load windows: %w", err)
	}
	var (
		k     levelKey
		width int32
		data  []byte
	)
	if _, err := pgx.ForEachRow(rows, []any{&k.Experiment, &k.Shadow, &width, &k.Start, &data}, func() error {
		var stored window.Window
		if err := json.Unmarshal(data, &stored); err != nil {
			return fmt.Errorf("decode stored window %s/%s at %s: %w", k.Experiment, k.Shadow, k.Start, err)
		}
		k.width, k.Start = time.Duration(width)*time.Second, k.Start.UTC()
		w := rolled[k]
		if w == nil {
			return nil
		}
		if err := stored.Merge(w); err != nil {
			return err
		}
		rolled[k] = &stored
		return nil
	}); err != nil {
		return 0, fmt.Errorf("load windows: %w", err)
	}
	var (
		roles  []string
		totals []int64
		datas  [][]byte
	)
	for _, k := range keys {
		w := rolled[k]
		b, err := json.Marshal(w)
		if err != nil {
			return 0, fmt.Errorf("encode window: %w", err)
		}
		roles, totals, datas = append(roles, w.Role), append(totals, int64(w.Total)), append(datas, b)
	}
	if _, err := tx.Exec(ctx, `
		INSERT INTO aggregator_windows (experiment, shadow, width_seconds, window_start, role, total, data, updated_at)
		SELECT *, now() FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::text[], $6::bigint[], $7::bytea[])
		ON CONFLICT (experiment, shadow, width_seconds, window_start) DO UPDATE
			SET role = excluded.role, total = excluded.total, data = excluded.data, updated_at = excluded.updated_at`,
		kexp, kshadow, kwidth, kstart, roles, totals, datas); err != nil {
		return 0, fmt.Errorf("upsert windows: %w", err)
	}
	return len(keys), nil
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
	if _, err := s.db.Exec(ctx, `DELETE FROM comparison_counts WHERE window_start < $1`, now.Add(-s.levels[len(s.levels)-1].Retention)); err != nil {
		return n, fmt.Errorf("retention of counts: %w", err)
	}
	return n, nil
}
