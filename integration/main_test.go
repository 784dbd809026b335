package integration

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/understudy-ml/understudy/integration/harness"
)

// One real broker and one real Postgres serve every test of the package.
var (
	broker   *harness.Kafka
	postgres *harness.Postgres
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	if broker, err = harness.StartKafka(); err != nil {
		fmt.Fprintln(os.Stderr, "integration: cannot start Kafka (tests fail, never skip):", err)
		return 1
	}
	defer func() { _ = broker.Stop() }()
	fmt.Fprintf(os.Stderr, "integration: Kafka at %s (ready in %s)\n", broker.Brokers, broker.Started.Round(1e6))
	if postgres, err = harness.StartPostgres(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "integration: cannot start Postgres (tests fail, never skip):", err)
		return 1
	}
	defer func() { _ = postgres.Stop() }()
	return m.Run()
}
