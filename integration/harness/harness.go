// Package harness starts the real dependencies of Understudy's integration tests: an Apache
// Kafka broker (KRaft, from Maven Central, through scripts/kafka.sh) and a throwaway
// PostgreSQL cluster. KAFKA_BROKERS and DATABASE_URL, when set, are used instead. There is no
// skip path: a dependency that cannot start fails the test, under CI=true and everywhere else.
package harness

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/understudy-ml/understudy/services/platform/pgrun"
)

// Kafka is a broker used by the tests.
type Kafka struct {
	Brokers string
	dir     string // empty when KAFKA_BROKERS was given
	Started time.Duration
}

// repoRoot returns the repository root (this file is integration/harness/harness.go).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// StartKafka returns KAFKA_BROKERS or starts a fresh single-node broker in a temp dir.
func StartKafka() (*Kafka, error) {
	if b := os.Getenv("KAFKA_BROKERS"); b != "" {
		return &Kafka{Brokers: b}, nil
	}
	return StartOwnKafka()
}

// Owned reports whether the harness started this broker (and may kill and restart it).
func (k *Kafka) Owned() bool { return k.dir != "" }

// StartOwnKafka starts a fresh single-node broker in a temp dir, whatever KAFKA_BROKERS says.
func StartOwnKafka() (*Kafka, error) {
	dir, err := os.MkdirTemp("", "understudy-kafka-")
	if err != nil {
		return nil, fmt.Errorf("kafka temp dir: %w", err)
	}
	k := &Kafka{dir: dir}
	start := time.Now()
	out, err := k.script("start")
	if err != nil {
		return nil, err
	}
	k.Started = time.Since(start)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	k.Brokers = lines[len(lines)-1]
	return k, nil
}

func (k *Kafka) script(verb string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(repoRoot(), "scripts", "kafka.sh"), verb, k.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/kafka.sh %s: %w\n%s", verb, err, stderr.String())
	}
	return stdout.String(), nil
}

// Kill hard-kills the broker, as a crash would (only for a broker the harness started).
func (k *Kafka) Kill() error { return k.control("kill") }

// Restart starts a stopped or killed broker again with the same port and data.
func (k *Kafka) Restart() error { return k.control("start") }

func (k *Kafka) control(verb string) error {
	if k.dir == "" {
		return fmt.Errorf("kafka %s: the broker comes from KAFKA_BROKERS and is not ours to control", verb)
	}
	_, err := k.script(verb)
	return err
}

// Stop stops the broker and removes its data (only for a broker the harness started).
func (k *Kafka) Stop() error {
	if k.dir == "" {
		return nil
	}
	_, err := k.script("stop")
	if rmErr := os.RemoveAll(k.dir); err == nil {
		err = rmErr
	}
	return err
}

// Postgres is a database used by the tests.
type Postgres struct {
	URL  string
	stop func() error
}

// StartPostgres returns DATABASE_URL or starts a throwaway cluster.
func StartPostgres(ctx context.Context) (*Postgres, error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return &Postgres{URL: u}, nil
	}
	c, stop, err := pgrun.StartTemp(ctx)
	if err != nil {
		return nil, err
	}
	return &Postgres{URL: c.URL, stop: stop}, nil
}

// Stop stops a cluster the harness started.
func (p *Postgres) Stop() error {
	if p.stop == nil {
		return nil
	}
	return p.stop()
}

// BuildService builds services/<name> into dir and returns the binary's path.
func BuildService(ctx context.Context, name, dir string) (string, error) {
	bin := filepath.Join(dir, name)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, ".")
	cmd.Dir = filepath.Join(repoRoot(), "services", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s: %w\n%s", name, err, out)
	}
	return bin, nil
}
