package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/understudy-ml/understudy/integration/harness"
	"github.com/understudy-ml/understudy/services/aggregator/store"
	invoker "github.com/understudy-ml/understudy/services/invoker/app"
	joiner "github.com/understudy-ml/understudy/services/joiner/app"
)

// The file name makes this test run last: the demo's services join the default consumer
// groups as static members, which stay in them until their session times out after the demo
// exits, and would hold partitions away from the next test using those groups.

// TestDemoVerdictsOnRealKafkaAndPostgres runs `understudy demo` (tap, invoker, joiner and
// aggregator, champion, candidate and noise-baseline copy, labels) on the shared broker and
// Postgres:
//   - A/A: an exact copy of the champion as candidate, 20,000 requests of which 5 % are
//     malformed (every model answers 400): no alert fires at any of the aggregator's looks
//     (every 5 s) and the verdict is not FAIL (exit 0 or 3);
//   - a worse candidate (2 points less accurate, 30 % slower to compute): FAIL on the accuracy
//     and latency rules, exit 1.
func TestDemoVerdictsOnRealKafkaAndPostgres(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ensureTopics(ctx, t)
	dir := t.TempDir()
	bin, err := harness.BuildService(ctx, "understudy", dir)
	if err != nil {
		t.Fatal(err)
	}
	db, err := pgxpool.New(ctx, postgres.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	demo := func(kind string, args ...string) (experiment, out string, code int) {
		experiment = fmt.Sprintf("demo-%s-%d", kind, time.Now().UnixNano())
		// Every group the demo's services use starts at the end of its inputs.
		group := invoker.NewDefaultConfig().Group
		for _, g := range []string{joiner.NewDefaultConfig().Group, group, invoker.LaneGroup(group, experiment, "candidate"), invoker.LaneGroup(group, experiment, "champion-copy")} {
			startAtEnd(ctx, t, g)
		}
		var stdout bytes.Buffer
		logPath := filepath.Join(dir, experiment+".log")
		logf, err := os.Create(logPath)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = logf.Close() }()
		cmd := exec.CommandContext(ctx, bin, append([]string{
			"demo", "--brokers=" + broker.Brokers, "--database-url=" + postgres.URL,
			"--experiment=" + experiment, "--candidate=" + kind, "--exit", "--addr=127.0.0.1:0", "--data-dir=" + filepath.Join(dir, kind),
		}, args...)...)
		cmd.Stdout, cmd.Stderr = &stdout, logf
		err = cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("demo %s: %v", kind, err)
		}
		log, _ := os.ReadFile(logPath)
		t.Logf("demo --candidate=%s exited %d:\n%s\nlog tail:\n%s", kind, cmd.ProcessState.ExitCode(), stdout.String(), tail(string(log), 1500))
		return experiment, stdout.String(), cmd.ProcessState.ExitCode()
	}
	fired := func(experiment string) (n int) {
		if err := db.QueryRow(ctx, `SELECT count(*) FROM alert_history WHERE experiment = $1 AND to_state = 'firing'`, experiment).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	exp, out, code := demo("copy", "--rate=200", "--duration=100s", "--malformed=0.05", "--min-duration=30s")
	if code != 0 && code != 3 {
		t.Fatalf("A/A demo exited %d, want 0 (PASS) or 3 (CONTINUE)", code)
	}
	if failedRule(out, "") {
		t.Errorf("A/A: a rule FAILed")
	}
	counts, err := store.Counts(ctx, db, exp)
	if err != nil {
		t.Fatal(err)
	}
	if got := sum(counts) - counts["labeled"]; got != 20000 {
		t.Errorf("A/A: %d comparisons in Postgres, want 20000", got)
	}
	if n := fired(exp); n != 0 {
		t.Errorf("A/A: %d alerts fired", n)
	}

	exp, out, code = demo("worse", "--rate=200", "--duration=60s", "--min-duration=30s")
	if code != 1 {
		t.Errorf("worse candidate: exit %d, want 1 (FAIL)", code)
	}
	if !failedRule(out, "accuracy_diff") {
		t.Errorf("worse candidate: accuracy_diff not reported FAIL")
	}
	// Its service time is 1.3 × the champion's (median 50 ms), which measures about 1.28 × at
	// p99 against the copy: the interval clears the 1.1 threshold within the minute.
	if !failedRule(out, "latency_p99_ratio") {
		t.Errorf("worse candidate: latency_p99_ratio not reported FAIL (status %q)", ruleStatus(out, "latency_p99_ratio"))
	}
	if n := fired(exp); n == 0 {
		t.Errorf("worse candidate: no alert fired")
	}
}

// ruleStatus returns rule's status in the report's rules table ("" when absent).
func ruleStatus(report, rule string) string {
	for _, line := range strings.Split(report, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == rule {
			return f[1]
		}
	}
	return ""
}

// failedRule reports whether the report's rules table has rule (any rule for "") with status
// FAIL.
func failedRule(report, rule string) bool {
	for _, line := range strings.Split(report, "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (rule == "" || f[0] == rule) && f[1] == "FAIL" {
			return true
		}
	}
	return false
}
