package pgrun

import (
	"context"
	"os"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5"
	"github.com/understudy-ml/understudy/services/platform/migrate"
)

// TestStartMigrateRestart starts a real throwaway cluster, applies migrations twice (the
// second run must apply nothing) and checks the data survives a restart.
func TestStartMigrateRestart(t *testing.T) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "pgrun-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, dir+"/pg")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Stop() }()
	ms, err := migrate.Load(fstest.MapFS{
		"m/0001_init.sql": {Data: []byte(`CREATE TABLE t (x int)`)},
		"m/0002_seed.sql": {Data: []byte(`INSERT INTO t VALUES (41), (1)`)},
		"m/README.md":     {Data: []byte(`ignored`)},
	}, "m")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{2, 0} {
		applied, err := migrate.Apply(ctx, conn, "test", ms)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != want {
			t.Fatalf("run %d applied %v, want %d migrations", i, applied, want)
		}
	}
	_ = conn.Close(ctx)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c, err = Start(ctx, dir+"/pg")
	if err != nil {
		t.Fatal(err)
	}
	conn, err = pgx.Connect(ctx, c.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close(ctx) }()
	var sum int
	if err := conn.QueryRow(ctx, `SELECT sum(x) FROM t`).Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 42 {
		t.Fatalf("sum = %d after restart, want 42", sum)
	}
}
