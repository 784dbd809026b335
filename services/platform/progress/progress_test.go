package progress

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestStallAfterTheLimitUntilDone(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	tr := New(30*time.Second, func() time.Time { return now })
	if err := tr.Check(context.Background()); err != nil {
		t.Fatalf("idle tracker not ready: %v", err)
	}
	tr.Begin()
	now = now.Add(20 * time.Second)
	tr.Begin() // a later start does not reset the oldest
	tr.Failed(errors.New("postgres: invalid byte sequence"))
	if err := tr.Check(context.Background()); err != nil {
		t.Fatalf("stalled before the limit: %v", err)
	}
	now = now.Add(11 * time.Second)
	err := tr.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "31s") || !strings.Contains(err.Error(), "invalid byte sequence") {
		t.Fatalf("stall not reported: %v", err)
	}
	tr.Done()
	if err := tr.Check(context.Background()); err != nil {
		t.Fatalf("still unready after progress: %v", err)
	}
}
