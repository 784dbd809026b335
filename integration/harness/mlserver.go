package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// MLServer is a real Seldon MLServer started by scripts/mlserver.sh (installed from PyPI on
// first use), serving the iris classifiers iris-a (champion) and iris-b (candidate).
type MLServer struct {
	URL  string
	Rows []IrisRow // every iris row with its class and both models' predictions
	dir  string
}

// IrisRow is one row of the test set the models are judged on.
type IrisRow struct {
	Features []float64 `json:"features"`
	Label    int       `json:"label"`
	A        int       `json:"iris-a"`
	B        int       `json:"iris-b"`
}

// StartMLServer starts MLServer in dir and waits until both models are ready.
func StartMLServer(ctx context.Context, dir string) (*MLServer, error) {
	script := filepath.Join(repoRoot(), "scripts", "mlserver.sh")
	cmd := exec.CommandContext(ctx, script, "start", dir)
	cmd.WaitDelay = 10 * time.Second // never wait for ever on a pipe a child kept open
	out, err := cmd.Output()
	if err != nil {
		var stderr string
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			stderr = string(ee.Stderr)
		}
		return nil, fmt.Errorf("mlserver.sh start: %w\n%s", err, stderr)
	}
	m := &MLServer{URL: strings.TrimSpace(string(out)), dir: dir}
	b, err := os.ReadFile(filepath.Join(dir, "testset.json"))
	if err != nil {
		_ = m.Stop()
		return nil, err
	}
	if err := json.Unmarshal(b, &m.Rows); err != nil {
		_ = m.Stop()
		return nil, fmt.Errorf("testset.json: %w", err)
	}
	return m, nil
}

// Stop stops the server.
func (m *MLServer) Stop() error {
	return exec.Command(filepath.Join(repoRoot(), "scripts", "mlserver.sh"), "stop", m.dir).Run()
}
