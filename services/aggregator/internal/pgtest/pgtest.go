// Package pgtest starts a throwaway Postgres with the aggregator's schema for tests. Under
// CI=true a Postgres that cannot start fails the test; elsewhere it skips it.
package pgtest

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

// Start returns a pool on a fresh migrated database, closed and removed when t ends.
func Start(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx := context.Background()
	pg, stop, err := pgrun.StartTemp(ctx)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("postgres: %v", err)
		}
		t.Skipf("postgres: %v", err)
	}
	t.Cleanup(func() { _ = stop() })
	db, err := pgxpool.New(ctx, pg.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	return db
}
