// Package labelstore keeps the joiner's long-lived label state in Postgres: final comparisons
// waiting for their label, labels waiting for their predictions, and which requests have been
// matched. It is a materialized view of the label-state changelog topic
// (understudy.joiner-labels.v1): the joiner writes entries to that topic inside its Kafka
// transactions and applies them here only after the transaction commits, together with the
// next changelog offset per partition. After a crash, the joiner re-applies the changelog from
// the stored offset; every apply is idempotent, so the state converges to exactly what the
// committed changelog says.
//
// Rows are partitioned by a time bucket of their own event time (a day by default) and whole
// buckets are dropped by Retain once older than the label window, so the state does not have
// to fit in memory and does not grow without bound.
package labelstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/platform/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Kind says what a changelog entry records.
type Kind uint8

// Entry kinds.
const (
	// KindPrediction is a final comparison (Value: the Avro-encoded Comparison).
	KindPrediction Kind = iota + 1
	// KindLabel is a label (Value: the Avro-encoded Label).
	KindLabel
	// KindMatched marks a request whose labeled comparison (or late verdict) is committed.
	KindMatched
)

// String returns the kind's name as written in changelog headers.
func (k Kind) String() string {
	switch k {
	case KindPrediction:
		return "prediction"
	case KindLabel:
		return "label"
	case KindMatched:
		return "matched"
	}
	return "unknown"
}

// ParseKind is the inverse of Kind.String.
func ParseKind(s string) (Kind, bool) {
	for _, k := range []Kind{KindPrediction, KindLabel, KindMatched} {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Entry is one committed changelog record.
type Entry struct {
	Kind      Kind
	Partition int32
	Offset    int64 // changelog offset
	RequestID string
	EventTime time.Time // prediction: the request's event time; label: the label's
	Value     []byte
	// Experiment of a label (may be empty: labels need not name it); kept for counting
	// orphans by experiment.
	Experiment string
}

// Ready is a request whose prediction and label are both known and not yet matched.
type Ready struct {
	Partition  int32
	RequestID  string
	Comparison []byte
	Label      []byte
}

// Retained says what Retain dropped.
type Retained struct {
	Buckets   int              // bucket partitions dropped (both tables)
	Orphaned  map[string]int64 // labels dropped without ever meeting their predictions, by experiment
	Unlabeled int64            // predictions dropped without a label
}

// Store is the Postgres label state. It is safe for concurrent use.
type Store struct {
	db    *pgxpool.Pool
	space string
	width time.Duration

	mu      sync.Mutex
	buckets map[int64]bool // bucket partitions known to exist
}

// New returns a store over db whose buckets are width long (24h in production). space
// separates joiner deployments (consumer groups) sharing one database.
func New(db *pgxpool.Pool, space string, width time.Duration) *Store {
	return &Store{db: db, space: space, width: width, buckets: map[int64]bool{}}
}

// ErrBucketMismatch means the database's label state uses another bucket width than this
// joiner's labels.bucket; every joiner sharing a database must use the same one.
var ErrBucketMismatch = errors.New("label-state bucket width differs from the database's")

// Migrate creates or updates the tables and checks (or, first, records) the bucket width.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return err
	}
	if _, err = migrate.Apply(ctx, s.db, "joiner", ms); err != nil {
		return err
	}
	var width string
	err = s.db.QueryRow(ctx, `WITH ins AS (INSERT INTO joiner_label_settings (key, value) VALUES ('bucket', $1)
			ON CONFLICT (key) DO NOTHING RETURNING value)
		SELECT value FROM ins UNION ALL SELECT value FROM joiner_label_settings WHERE key = 'bucket' LIMIT 1`, s.width.String()).Scan(&width)
	if err != nil {
		return fmt.Errorf("label-state settings: %w", err)
	}
	if width != s.width.String() {
		return fmt.Errorf("%w: labels.bucket is %s, the database uses %s", ErrBucketMismatch, s.width, width)
	}
	return nil
}

// Ping checks the database.
func (s *Store) Ping(ctx context.Context) error { return s.db.Ping(ctx) }

// Offsets returns the next changelog offset to apply for each partition (0 when none).
func (s *Store) Offsets(ctx context.Context, parts []int32) (map[int32]int64, error) {
	out := make(map[int32]int64, len(parts))
	for _, p := range parts {
		out[p] = 0
	}
	rows, err := s.db.Query(ctx, `SELECT partition, next_offset FROM joiner_label_offsets WHERE space = $1 AND partition = ANY($2)`, s.space, parts)
	if err != nil {
		return nil, fmt.Errorf("read label-state offsets: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var p int32
		var o int64
		if err := rows.Scan(&p, &o); err != nil {
			return nil, fmt.Errorf("read label-state offsets: %w", err)
		}
		out[p] = o
	}
	return out, rows.Err()
}

func (s *Store) bucket(t time.Time) time.Time { return t.UTC().Truncate(s.width) }

func tableName(table string, bucket time.Time) string {
	return table + "_" + bucket.UTC().Format("20060102t150405")
}

// ensureBuckets creates the bucket partitions entries need.
func (s *Store) ensureBuckets(ctx context.Context, entries []Entry) error {
	var missing []time.Time
	s.mu.Lock()
	for _, e := range entries {
		if e.Kind == KindMatched {
			continue
		}
		b := s.bucket(e.EventTime)
		if !s.buckets[b.Unix()] {
			s.buckets[b.Unix()] = true
			missing = append(missing, b)
		}
	}
	s.mu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('understudy_joiner_buckets'))`); err != nil {
			return err
		}
		for _, b := range missing {
			for _, table := range []string{"joiner_predictions", "joiner_labels"} {
				sql := fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`,
					tableName(table, b), table, b.Format(time.RFC3339), b.Add(s.width).Format(time.RFC3339))
				if _, err := tx.Exec(ctx, sql); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		s.mu.Lock()
		for _, b := range missing {
			delete(s.buckets, b.Unix())
		}
		s.mu.Unlock()
		return fmt.Errorf("create label-state buckets: %w", err)
	}
	return nil
}

// Apply applies committed changelog entries in one Postgres transaction, together with the next
// offset of each partition they come from, and returns the requests that became ready: both
// sides present and not matched. Applying the same entries again changes nothing and reports
// nothing new (a request is reported once, when it enters the ready queue; LoadReady returns
// the whole queue after a restart). Predictions and labels whose bucket ended before cutoff
// (the retention horizon) are not stored, since Retain would drop them at once; skipped
// counts them.
func (s *Store) Apply(ctx context.Context, entries []Entry, cutoff time.Time) (ready []Ready, skipped int, err error) {
	if len(entries) == 0 {
		return nil, 0, nil
	}
	all := entries
	kept := entries[:0:0]
	for _, e := range entries {
		if e.Kind != KindMatched && !s.bucket(e.EventTime).Add(s.width).After(cutoff) {
			skipped++
			continue
		}
		kept = append(kept, e)
	}
	entries = kept
	if err := s.ensureBuckets(ctx, entries); err != nil {
		return nil, 0, err
	}
	var (
		pred, lab, match, touched cols
		next                      = map[int32]int64{}
	)
	for _, e := range all {
		if e.Offset+1 > next[e.Partition] {
			next[e.Partition] = e.Offset + 1
		}
	}
	for _, e := range entries {
		switch e.Kind {
		case KindPrediction:
			pred.add(s.bucket(e.EventTime), e)
			touched.add(time.Time{}, e)
		case KindLabel:
			lab.add(s.bucket(e.EventTime), e)
			touched.add(time.Time{}, e)
		case KindMatched:
			match.add(time.Time{}, e)
		}
	}
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		// Every statement below finds rows by index probes for the batch's keys, never by
		// scanning, hashing or joining whole tables: fresh bucket tables have no statistics,
		// and the planner otherwise picks plans whose cost grows with the table (measured:
		// 100 ms per batch became 20 s). Lookups are scalar subqueries per key (evaluated
		// once per key, always through the primary key) and only plain index scans are
		// allowed. Commits need not wait for the WAL flush: a commit lost in a Postgres crash
		// is re-applied from the changelog, since the offsets are in the same transaction.
		b.Queue(`SET LOCAL enable_seqscan = off`)
		b.Queue(`SET LOCAL enable_bitmapscan = off`)
		b.Queue(`SET LOCAL synchronous_commit = off`)
		if len(pred.ids) > 0 {
			b.Queue(`INSERT INTO joiner_predictions (bucket, space, partition, request_id, event_time, comparison)
				SELECT b, $6, p, r, t, v FROM unnest($1::timestamptz[], $2::int[], $3::text[], $4::timestamptz[], $5::bytea[]) AS u(b, p, r, t, v)
				ON CONFLICT DO NOTHING`, pred.buckets, pred.parts, pred.ids, pred.times, pred.values, s.space)
		}
		if len(lab.ids) > 0 {
			b.Queue(`INSERT INTO joiner_labels (bucket, space, partition, request_id, event_time, label, experiment)
				SELECT b, $6, p, r, t, v, x FROM unnest($1::timestamptz[], $2::int[], $3::text[], $4::timestamptz[], $5::bytea[], $7::text[]) AS u(b, p, r, t, v, x)
				ON CONFLICT DO NOTHING`, lab.buckets, lab.parts, lab.ids, lab.times, lab.values, s.space, lab.exps)
		}
		if len(match.ids) > 0 {
			parts := distinct(match.parts)
			b.Queue(`UPDATE joiner_predictions SET matched = true
				WHERE space = $3 AND partition = ANY($1) AND request_id = ANY($2) AND NOT matched`, parts, match.ids, s.space)
			b.Queue(`DELETE FROM joiner_label_ready WHERE space = $3 AND partition = ANY($1) AND request_id = ANY($2)`, parts, match.ids, s.space)
		}
		parts, offs := make([]int32, 0, len(next)), make([]int64, 0, len(next))
		for p, o := range next {
			parts, offs = append(parts, p), append(offs, o)
		}
		b.Queue(`INSERT INTO joiner_label_offsets (space, partition, next_offset) SELECT $3, p, o FROM unnest($1::int[], $2::bigint[]) AS u(p, o)
			ON CONFLICT (space, partition) DO UPDATE SET next_offset = GREATEST(joiner_label_offsets.next_offset, EXCLUDED.next_offset)`, parts, offs, s.space)
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
		if len(touched.ids) == 0 {
			return nil
		}
		// Candidates: touched keys whose earliest prediction is unmatched and that have a
		// label, with both values, each side found by one primary-key probe (LATERAL forces
		// the per-key plan). Then the ready queue keeps those not already queued.
		rows, err := tx.Query(ctx, `SELECT k.partition, k.request_id, p.comparison, l.label
			FROM (SELECT DISTINCT partition, request_id FROM unnest($1::int[], $2::text[]) AS u(partition, request_id)) k
			JOIN LATERAL (SELECT comparison, matched FROM joiner_predictions p WHERE p.space = $3 AND p.request_id = k.request_id AND p.partition = k.partition
				ORDER BY event_time LIMIT 1) p ON NOT p.matched
			JOIN LATERAL (SELECT label FROM joiner_labels l WHERE l.space = $3 AND l.request_id = k.request_id AND l.partition = k.partition
				ORDER BY event_time LIMIT 1) l ON true`, touched.parts, touched.ids, s.space)
		if err != nil {
			return err
		}
		candidates, err := scanReady(rows)
		if err != nil || len(candidates) == 0 {
			return err
		}
		var q cols
		for _, c := range candidates {
			q.add(time.Time{}, Entry{Partition: c.Partition, RequestID: c.RequestID})
		}
		rows, err = tx.Query(ctx, `INSERT INTO joiner_label_ready (space, partition, request_id)
			SELECT $3, partition, request_id FROM unnest($1::int[], $2::text[]) AS u(partition, request_id)
			ON CONFLICT DO NOTHING RETURNING partition, request_id`, q.parts, q.ids, s.space)
		if err != nil {
			return err
		}
		queued := map[readyKey]bool{}
		var k readyKey
		if _, err := pgx.ForEachRow(rows, []any{&k.partition, &k.id}, func() error { queued[k] = true; return nil }); err != nil {
			return err
		}
		for _, c := range candidates {
			if queued[readyKey{c.Partition, c.RequestID}] {
				ready = append(ready, c)
			}
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("apply label state: %w", err)
	}
	return ready, skipped, nil
}

// selectReady selects each key of the relation from with its earliest prediction and label,
// by scalar subqueries (one primary-key probe each); space is the parameter holding the space.
func selectReady(from, space string) string {
	return `SELECT q.partition, q.request_id,
		(SELECT comparison FROM joiner_predictions p WHERE p.space = ` + space + ` AND p.request_id = q.request_id AND p.partition = q.partition ORDER BY event_time LIMIT 1),
		(SELECT label FROM joiner_labels l WHERE l.space = ` + space + ` AND l.request_id = q.request_id AND l.partition = q.partition ORDER BY event_time LIMIT 1)
		FROM ` + from + ` q`
}

type readyKey struct {
	partition int32
	id        string
}

// distinct returns the distinct values of parts.
func distinct(parts []int32) []int32 {
	seen := map[int32]bool{}
	var out []int32
	for _, p := range parts {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

func scanReady(rows pgx.Rows) ([]Ready, error) {
	defer rows.Close()
	var out []Ready
	for rows.Next() {
		var r Ready
		if err := rows.Scan(&r.Partition, &r.RequestID, &r.Comparison, &r.Label); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// LoadReady returns the ready queue of parts: requests applied as ready whose match marker has
// not been applied yet. A joiner calls it after catching up on newly assigned partitions.
func (s *Store) LoadReady(ctx context.Context, parts []int32) ([]Ready, error) {
	rows, err := s.db.Query(ctx, `WITH r AS (SELECT partition, request_id FROM joiner_label_ready WHERE space = $2 AND partition = ANY($1)) `+
		selectReady("r", "$2"), parts, s.space)
	if err != nil {
		return nil, fmt.Errorf("load ready labels: %w", err)
	}
	out, err := scanReady(rows)
	if err != nil {
		return nil, fmt.Errorf("load ready labels: %w", err)
	}
	return out, nil
}

// Retain drops every bucket that ended before cutoff (now minus the longest label window),
// counting the labels that never met their predictions (orphaned) and the predictions that
// never got a label. One replica at a time does it (a transaction-scoped advisory lock);
// the others return zero. Buckets are shared by every space: the counts are this space's,
// other spaces' rows are dropped with them.
func (s *Store) Retain(ctx context.Context, cutoff time.Time) (Retained, error) {
	res := Retained{Orphaned: map[string]int64{}}
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var locked bool
		if err := tx.QueryRow(ctx, `SELECT pg_try_advisory_xact_lock(hashtext('understudy_joiner_retain'))`).Scan(&locked); err != nil || !locked {
			return err
		}
		old := map[string][]string{}
		for _, table := range []string{"joiner_labels", "joiner_predictions"} {
			names, err := s.partitions(ctx, tx, table)
			if err != nil {
				return err
			}
			for _, name := range names {
				b, err := time.Parse("20060102t150405", strings.TrimPrefix(name, table+"_"))
				if err == nil && !b.Add(s.width).After(cutoff) {
					old[table] = append(old[table], name)
				}
			}
		}
		for _, name := range old["joiner_labels"] {
			rows, err := tx.Query(ctx, `SELECT experiment, count(*) FROM `+name+` l WHERE l.space = $1 AND NOT EXISTS
				(SELECT 1 FROM joiner_predictions p WHERE p.space = l.space AND p.partition = l.partition AND p.request_id = l.request_id)
				GROUP BY experiment`, s.space)
			if err != nil {
				return err
			}
			var (
				exp string
				n   int64
			)
			if _, err := pgx.ForEachRow(rows, []any{&exp, &n}, func() error { res.Orphaned[exp] += n; return nil }); err != nil {
				return err
			}
		}
		for _, name := range old["joiner_predictions"] {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+name+` WHERE space = $1 AND NOT matched`, s.space).Scan(&n); err != nil {
				return err
			}
			res.Unlabeled += n
		}
		for _, table := range []string{"joiner_labels", "joiner_predictions"} {
			for _, name := range old[table] {
				if _, err := tx.Exec(ctx, `DROP TABLE `+name); err != nil {
					return err
				}
				res.Buckets++
			}
		}
		return nil
	})
	if err != nil {
		return Retained{}, fmt.Errorf("label-state retention: %w", err)
	}
	if res.Buckets > 0 {
		s.mu.Lock()
		clear(s.buckets) // some may be gone; CREATE IF NOT EXISTS re-checks
		s.mu.Unlock()
	}
	return res, nil
}

func (s *Store) partitions(ctx context.Context, tx pgx.Tx, table string) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = $1::regclass`, table)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	sort.Strings(names)
	return names, err
}

// Rows estimates the rows of each table (from planner statistics; cheap at any size).
func (s *Store) Rows(ctx context.Context) (map[string]int64, error) {
	out := map[string]int64{}
	for _, table := range []string{"joiner_predictions", "joiner_labels", "joiner_label_ready"} {
		var n int64
		err := s.db.QueryRow(ctx, `SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_class c
			WHERE c.oid = $1::regclass OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::regclass)`, table).Scan(&n)
		if err != nil {
			return nil, fmt.Errorf("estimate %s rows: %w", table, err)
		}
		out[table] = n
	}
	return out, nil
}

// cols accumulates entries as column arrays for unnest.
type cols struct {
	exps    []string
	buckets []time.Time
	parts   []int32
	ids     []string
	times   []time.Time
	values  [][]byte
}

func (c *cols) add(bucket time.Time, e Entry) {
	c.buckets = append(c.buckets, bucket)
	c.parts = append(c.parts, e.Partition)
	c.ids = append(c.ids, e.RequestID)
	c.times = append(c.times, e.EventTime)
	c.values = append(c.values, e.Value)
	c.exps = append(c.exps, e.Experiment)
}
