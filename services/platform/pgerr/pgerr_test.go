package pgerr

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestIsData(t *testing.T) {
	for code, want := range map[string]bool{"22021": true, "54000": true, "40001": false, "08006": false} {
		err := fmt.Errorf("apply: %w", &pgconn.PgError{Code: code})
		if IsData(err) != want {
			t.Errorf("%s: IsData = %v", code, !want)
		}
	}
	if IsData(fmt.Errorf("plain")) {
		t.Error("a non-Postgres error is not a data error")
	}
}
