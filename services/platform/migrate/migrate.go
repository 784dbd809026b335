// Package migrate applies a service's versioned SQL migrations at start-up.
//
// It is a small embedded runner rather than a migration library: each service embeds its own
// migrations/NNNN_name.sql files, the runner applies the pending ones in order inside one
// transaction under a Postgres advisory lock (so replicas starting together do not race), and
// records them in understudy_migrations keyed by (service, version). That is all we need, it
// adds no dependency beyond pgx, and services sharing one database keep separate histories.
// Migrations only move forward; a down migration is a new forward migration.
package migrate

import (
	"context"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Migration is one versioned SQL script.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Load reads NNNN_name.sql files from dir in fsys, sorted by version. Versions must be unique.
func Load(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("read migrations: %w", err)
	}
	var out []Migration
	seen := map[int]string{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migration version %d used by %s and %s", v, prev, e.Name())
		}
		seen[v] = e.Name()
		b, err := fs.ReadFile(fsys, path.Join(dir, e.Name()))
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Conn is the part of pgx (a *pgx.Conn or *pgxpool.Pool) the runner needs.
type Conn interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Apply applies every migration of service newer than the recorded version, in one
// transaction, and returns the versions it applied.
func Apply(ctx context.Context, db Conn, service string, migrations []Migration) ([]int, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('understudy_migrations'))`); err != nil {
		return nil, fmt.Errorf("lock migrations: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS understudy_migrations (
		service    text NOT NULL,
		version    int  NOT NULL,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (service, version))`); err != nil {
		return nil, fmt.Errorf("create migrations table: %w", err)
	}
	var current int
	if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM understudy_migrations WHERE service = $1`, service).Scan(&current); err != nil {
		return nil, fmt.Errorf("read migration version: %w", err)
	}
	var applied []int
	for _, m := range migrations {
		if m.Version <= current {
			continue
		}
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return nil, fmt.Errorf("migration %s %04d_%s: %w", service, m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO understudy_migrations (service, version, name) VALUES ($1, $2, $3)`, service, m.Version, m.Name); err != nil {
			return nil, fmt.Errorf("record migration %d: %w", m.Version, err)
		}
		applied = append(applied, m.Version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("commit migrations: %w", err)
	}
	return applied, nil
}
