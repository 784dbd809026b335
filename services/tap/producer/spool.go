package producer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// errSpoolFull means the spool has reached its size limit.
var errSpoolFull = errors.New("spool full")

// spool is a bounded on-disk FIFO of records, in segment files seg-<seq>.log. Each entry is
// [u32 length][u32 crc32c of the rest][u16 key length][key][value]. The writer appends to the
// newest segment; the replayer reads closed segments oldest first, remembers its position in
// seg-<seq>.pos after each acknowledged batch and deletes a segment once it is fully replayed.
// Writes are buffered: a crash loses at most the entries written since the last flush.
type spool struct {
	dir      string
	maxBytes int64
	segBytes int64

	mu      sync.Mutex
	size    int64 // bytes in all segments
	seq     uint64
	cur     *os.File
	w       *bufio.Writer
	curSize int64
}

type entry struct {
	key, value []byte
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func openSpool(dir string, maxBytes int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool dir: %w", err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, segBytes: min(4<<20, max(maxBytes/4, 64<<10))}
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	for _, seq := range segs {
		st, err := os.Stat(s.segPath(seq))
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
		s.size += st.Size()
		s.seq = max(s.seq, seq)
	}
	return s, nil
}

func (s *spool) segPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("seg-%020d.log", seq))
}

func (s *spool) posPath(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("seg-%020d.pos", seq))
}

// segments returns the sequence numbers of existing segments, oldest first.
func (s *spool) segments() ([]uint64, error) {
	names, err := filepath.Glob(filepath.Join(s.dir, "seg-*.log"))
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	var out []uint64
	for _, n := range names {
		seq, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(filepath.Base(n), "seg-"), ".log"), 10, 64)
		if err == nil {
			out = append(out, seq)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

// Bytes returns the spool's size on disk (including unflushed appends).
func (s *spool) Bytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.size
}

// Append adds one entry, or returns errSpoolFull.
func (s *spool) Append(e entry) error {
	n := int64(10 + len(e.key) + len(e.value))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size+n > s.maxBytes {
		return errSpoolFull
	}
	if s.cur == nil || s.curSize+n > s.segBytes && s.curSize > 0 {
		if err := s.rotateLocked(); err != nil {
			return err
		}
	}
	var hdr [10]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(n-8))
	binary.BigEndian.PutUint16(hdr[8:10], uint16(len(e.key)))
	crc := crc32.Update(crc32.Update(crc32.Checksum(hdr[8:10], crcTable), crcTable, e.key), crcTable, e.value)
	binary.BigEndian.PutUint32(hdr[4:8], crc)
	for _, b := range [][]byte{hdr[:], e.key, e.value} {
		if _, err := s.w.Write(b); err != nil {
			return fmt.Errorf("spool write: %w", err)
		}
	}
	s.size += n
	s.curSize += n
	return nil
}

// Flush writes buffered appends to the current segment file.
func (s *spool) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return nil
	}
	return s.w.Flush()
}

// rotateLocked closes the current segment (making it replayable) and opens no new one; the
// next Append opens seg-<seq+1>.
func (s *spool) rotateLocked() error {
	if s.cur != nil {
		if err := s.w.Flush(); err != nil {
			return fmt.Errorf("spool flush: %w", err)
		}
		if err := s.cur.Close(); err != nil {
			return fmt.Errorf("spool close: %w", err)
		}
		s.cur, s.w, s.curSize = nil, nil, 0
	}
	s.seq++
	f, err := os.OpenFile(s.segPath(s.seq), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("spool segment: %w", err)
	}
	s.cur, s.w = f, bufio.NewWriterSize(f, 64<<10)
	return nil
}

// seal closes the current segment so that everything appended so far can be replayed.
func (s *spool) seal() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return nil
	}
	if err := s.w.Flush(); err != nil {
		return fmt.Errorf("spool flush: %w", err)
	}
	if err := s.cur.Close(); err != nil {
		return fmt.Errorf("spool close: %w", err)
	}
	s.cur, s.w, s.curSize = nil, nil, 0
	return nil
}

// sealed returns the closed segments, oldest first.
func (s *spool) sealed() ([]uint64, error) {
	segs, err := s.segments()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil && len(segs) > 0 && segs[len(segs)-1] == s.seq {
		segs = segs[:len(segs)-1]
	}
	return segs, nil
}

// replay reads segment seq from its saved position and hands batches of at most batch entries
// to send; after each successful send it saves the position. It deletes the segment when all
// of it was sent. A corrupt tail (torn write at a crash) ends the segment.
func (s *spool) replay(seq uint64, batch int, send func([]entry) error) (int, error) {
	f, err := os.Open(s.segPath(seq))
	if err != nil {
		return 0, fmt.Errorf("spool open: %w", err)
	}
	defer func() { _ = f.Close() }() // read-only: a close error loses nothing
	pos := s.loadPos(seq)
	if _, err := f.Seek(pos, io.SeekStart); err != nil {
		return 0, fmt.Errorf("spool seek: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	sent := 0
	for {
		var es []entry
		var consumed int64
		for len(es) < batch {
			e, n, err := readEntry(r)
			if err != nil {
				break
			}
			es = append(es, e)
			consumed += n
		}
		if len(es) == 0 {
			break
		}
		if err := send(es); err != nil {
			return sent, err
		}
		sent += len(es)
		pos += consumed
		if err := os.WriteFile(s.posPath(seq), []byte(strconv.FormatInt(pos, 10)), 0o600); err != nil {
			return sent, fmt.Errorf("spool position: %w", err)
		}
	}
	st, err := f.Stat()
	if err != nil {
		return sent, fmt.Errorf("spool stat: %w", err)
	}
	if err := os.Remove(s.segPath(seq)); err != nil {
		return sent, fmt.Errorf("spool remove: %w", err)
	}
	_ = os.Remove(s.posPath(seq))
	s.mu.Lock()
	s.size -= st.Size()
	s.mu.Unlock()
	return sent, nil
}

func (s *spool) loadPos(seq uint64) int64 {
	b, err := os.ReadFile(s.posPath(seq))
	if err != nil {
		return 0
	}
	p, _ := strconv.ParseInt(string(b), 10, 64)
	return p
}

func readEntry(r *bufio.Reader) (entry, int64, error) {
	var hdr [10]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return entry{}, 0, err
	}
	n := int64(binary.BigEndian.Uint32(hdr[0:4]))
	klen := int64(binary.BigEndian.Uint16(hdr[8:10]))
	if n < 2+klen || n > 16<<20 {
		return entry{}, 0, errors.New("corrupt spool entry")
	}
	body := make([]byte, n-2)
	if _, err := io.ReadFull(r, body); err != nil {
		return entry{}, 0, err
	}
	crc := crc32.Update(crc32.Checksum(hdr[8:10], crcTable), crcTable, body)
	if crc != binary.BigEndian.Uint32(hdr[4:8]) {
		return entry{}, 0, errors.New("corrupt spool entry")
	}
	return entry{key: body[:klen], value: body[klen:]}, n + 8, nil
}

// Close flushes and closes the current segment.
func (s *spool) Close() error { return s.seal() }
