// Package app is the aggregator: it counts comparisons per experiment, window and status in
// Postgres.
//
// Delivery: exactly-once into Postgres. The counts of a batch and the next offsets of its
// partitions are written in one Postgres transaction; on assignment the consumer starts from
// the offsets stored there, so a crash or a replay of the input changes no count. Kafka group
// offsets are not used. Replicas share the consumer group; writes are one upsert per window
// and status per batch, not per record.
package app

import (
	"context"
	"embed"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/schemas"
	"github.com/understudy-ml/understudy/services/platform/consume"
	"github.com/understudy-ml/understudy/services/platform/deadletter"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/migrate"
	"github.com/understudy-ml/understudy/services/platform/registry"
	"github.com/understudy-ml/understudy/services/platform/server"
	"golang.org/x/sync/errgroup"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Aggregator writes comparison counts. Create it with New, start it with Run.
type Aggregator struct {
	cfg    Config
	logger *slog.Logger
	client *kgo.Client
	db     *pgxpool.Pool
	codecs *schemas.Codecs
	dlq    *deadletter.Publisher
	ops    *server.Server

	counted prometheus.Counter
	batches prometheus.Counter
}

// New wires an aggregator; it does not touch the network (the pool connects lazily).
func New(cfg Config, logger *slog.Logger, reg *prometheus.Registry) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid config: %w", err)
	}
	codecs, err := schemas.NewCodecs()
	if err != nil {
		return nil, fmt.Errorf("codecs: %w", err)
	}
	db, err := pgxpool.New(context.Background(), cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("postgres pool: %w", err)
	}
	a := &Aggregator{cfg: cfg, logger: logger, db: db, codecs: codecs}
	a.client, err = kgo.NewClient(append(cfg.Kafka.Opts(),
		kgo.ConsumerGroup(cfg.Group),
		kgo.ConsumeTopics(schemas.TopicComparisons),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.AdjustFetchOffsetsFn(a.storedOffsets),
	)...)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	f := promauto.With(reg)
	a.dlq = deadletter.New("aggregator", a.client, reg)
	a.ops = server.New(cfg.Ops, logger, reg)
	a.ops.AddCheck("kafka", func(ctx context.Context) error { return kafka.Ping(ctx, a.client) })
	a.ops.AddCheck("postgres", func(ctx context.Context) error { return db.Ping(ctx) })
	a.counted = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_comparisons_total", Help: "Comparisons counted into Postgres."})
	a.batches = f.NewCounter(prometheus.CounterOpts{Name: "understudy_aggregator_transactions_total", Help: "Postgres transactions committed."})
	return a, nil
}

// Ops returns the operational server.
func (a *Aggregator) Ops() *server.Server { return a.ops }

// Run applies migrations, then aggregates until ctx ends; it finishes the batch in progress.
func (a *Aggregator) Run(ctx context.Context) error {
	defer a.db.Close()
	defer a.client.Close()
	if err := registry.Configure(ctx, a.cfg.Registry, a.codecs); err != nil {
		return err
	}
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return err
	}
	applied, err := migrate.Apply(ctx, a.db, "aggregator", ms)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("migrate: %w", err)
	}
	a.logger.Info("aggregator starting", "group", a.cfg.Group, "window", a.cfg.Window.String(), "migrations_applied", len(applied))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return a.ops.Run(gctx) })
	g.Go(func() error { return consume.Loop(gctx, a.client, a.logger, a.handle) })
	return g.Wait()
}

type countKey struct {
	experiment string
	window     time.Time
	status     string
}

func (a *Aggregator) handle(ctx context.Context, fs kgo.Fetches) error {
	counts := map[countKey]int64{}
	next := map[string]map[int32]int64{}
	var err error
	fs.EachRecord(func(r *kgo.Record) {
		if err != nil {
			return
		}
		if next[r.Topic] == nil {
			next[r.Topic] = map[int32]int64{}
		}
		next[r.Topic][r.Partition] = r.Offset + 1
		c, derr := a.codecs.Comparison.Decode(ctx, r.Value)
		if derr != nil {
			err = a.dlq.Publish(ctx, r, deadletter.ReasonDecode, derr)
			return
		}
		status := c.Status
		if c.Label != nil {
			// A labeled comparison repeats a final one with its label: count it apart so
			// that status counts stay one per request.
			status = "labeled"
		}
		counts[countKey{c.Experiment, c.EventTime.Truncate(a.cfg.Window), status}]++
	})
	if err != nil {
		return err
	}
	if err := a.write(ctx, counts, next); err != nil {
		return err
	}
	var n int64
	for _, v := range counts {
		n += v
	}
	a.counted.Add(float64(n))
	a.batches.Inc()
	return nil
}

// write upserts counts and offsets in one transaction.
func (a *Aggregator) write(ctx context.Context, counts map[countKey]int64, next map[string]map[int32]int64) error {
	var (
		exps, statuses []string
		windows        []time.Time
		ns             []int64
		topics         []string
		parts          []int32
		offs           []int64
	)
	for k, v := range counts {
		exps, windows, statuses, ns = append(exps, k.experiment), append(windows, k.window), append(statuses, k.status), append(ns, v)
	}
	for t, ps := range next {
		for p, o := range ps {
			topics, parts, offs = append(topics, t), append(parts, p), append(offs, o)
		}
	}
	return pgx.BeginFunc(ctx, a.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO comparison_counts (experiment, window_start, status, count)
			SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])
			ON CONFLICT (experiment, window_start, status) DO UPDATE SET count = comparison_counts.count + excluded.count`,
			exps, windows, statuses, ns); err != nil {
			return fmt.Errorf("upsert counts: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO consumer_offsets (consumer_group, topic, partition, next_offset)
			SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
			ON CONFLICT (consumer_group, topic, partition) DO UPDATE SET next_offset = excluded.next_offset`,
			a.cfg.Group, topics, parts, offs); err != nil {
			return fmt.Errorf("upsert offsets: %w", err)
		}
		return nil
	})
}

// storedOffsets replaces the offsets the group would start from with those stored in
// Postgres next to the counts; partitions never stored start at the beginning of the topic.
func (a *Aggregator) storedOffsets(ctx context.Context, assigned map[string]map[int32]kgo.Offset) (map[string]map[int32]kgo.Offset, error) {
	stored, err := StoredOffsets(ctx, a.db, a.cfg.Group)
	if err != nil {
		return nil, err
	}
	for t, ps := range assigned {
		for p := range ps {
			if o, ok := stored[t][p]; ok {
				assigned[t][p] = kgo.NewOffset().At(o)
			} else {
				assigned[t][p] = kgo.NewOffset().AtStart()
			}
		}
	}
	return assigned, nil
}

// Querier is the part of pgx (*pgx.Conn, *pgxpool.Pool) that Counts needs.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Counts returns the comparisons counted for experiment over all windows, by status.
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
