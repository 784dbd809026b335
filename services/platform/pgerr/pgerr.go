// Package pgerr classifies PostgreSQL errors for the services that write to it.
package pgerr

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// IsData reports whether Postgres refused a statement for the values it carried: SQL state
// class 22 (data exception, e.g. an invalid byte sequence) or 54 (program limit exceeded, e.g.
// an index row too large). Retrying cannot help; the other rows of the batch may be fine.
func IsData(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "54"))
}
