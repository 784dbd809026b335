package producer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestSpoolKeepsOrderAcrossRestartsAndPartialReplays(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	s.segBytes = 600 // force several segments
	for i := range 100 {
		if err := s.Append(entry{key: []byte(fmt.Sprint("k", i)), value: []byte(fmt.Sprint("v", i))}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// A new process finds the spool, replays part of it and fails.
	s, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if s.Bytes() == 0 {
		t.Fatal("reopened spool is empty")
	}
	var got []string
	segs, err := s.sealed()
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %v, %v", segs, err)
	}
	calls := 0
	_, err = s.replay(segs[0], 5, func(es []entry) error {
		calls++
		if calls == 2 {
			return errors.New("kafka down")
		}
		for _, e := range es {
			got = append(got, string(e.key))
		}
		return nil
	})
	if err == nil {
		t.Fatal("replay error not returned")
	}
	// The next replay resumes after the acknowledged batch: nothing lost, nothing repeated.
	for _, seq := range segs {
		if _, err := s.replay(seq, 5, func(es []entry) error {
			for _, e := range es {
				got = append(got, string(e.key))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != 100 {
		t.Fatalf("replayed %d entries, want 100", len(got))
	}
	for i, k := range got {
		if k != fmt.Sprint("k", i) {
			t.Fatalf("entry %d is %s: order broken", i, k)
		}
	}
	if s.Bytes() != 0 {
		t.Fatalf("spool still holds %d bytes", s.Bytes())
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}

func TestSpoolLimitAndTornTail(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for ; n < 1000; n++ {
		if err := s.Append(entry{key: []byte("k"), value: make([]byte, 89)}); errors.Is(err, errSpoolFull) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if n != 10 {
		t.Fatalf("spool of 1000 bytes took %d entries of 100 bytes", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Simulate a crash in the middle of a write: a torn last entry is ignored.
	segs, _ := s.segments()
	f, err := os.OpenFile(s.segPath(segs[0]), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{0, 0, 0, 50, 1, 2})
	_ = f.Close()
	sent := 0
	if _, err := s.replay(segs[0], 100, func(es []entry) error { sent += len(es); return nil }); err != nil {
		t.Fatal(err)
	}
	if sent != 10 {
		t.Fatalf("replayed %d entries, want the 10 whole ones", sent)
	}
}
