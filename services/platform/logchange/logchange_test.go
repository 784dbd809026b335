package logchange

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

func TestWarnOncePerChange(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	var w Warner
	a, b := errors.New("broker down"), errors.New("auth failed")
	steps := []struct {
		err  error
		want bool
	}{{a, true}, {a, false}, {errors.New("broker down"), false}, {b, true}, {a, true}, {nil, false}, {a, false}}
	for i, s := range steps {
		if got := w.Warn(logger, "fetch", s.err, "partition", 3); got != s.want {
			t.Fatalf("step %d (%v): logged %v, want %v", i, s.err, got, s.want)
		}
	}
	w.Clear()
	if !w.Warn(logger, "fetch", a) {
		t.Fatal("the same error after Clear was not logged")
	}
	out := buf.String()
	if n := strings.Count(out, "level=WARN"); n != 4 {
		t.Fatalf("%d lines logged, want 4:\n%s", n, out)
	}
	if !strings.Contains(out, `err="broker down" partition=3`) {
		t.Fatalf("attributes missing:\n%s", out)
	}
}
