package schemas

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/linkedin/goavro/v2"
)

// Framing bytes. Single-object encoding is defined by the Avro specification; the Confluent
// wire format is a zero byte followed by a big-endian uint32 schema id.
const (
	soeMagic0       = 0xC3
	soeMagic1       = 0x01
	soeHeaderLen    = 10
	confluentMagic  = 0x00
	confluentHdrLen = 5
)

var (
	// ErrFraming means the bytes start with neither single-object nor Confluent framing.
	ErrFraming = errors.New("unrecognised framing: want Avro single-object (C3 01) or Confluent (00) header")
	// ErrUnknownSchema means the writer schema named by the framing (fingerprint or registry
	// id) is not known to the codec and could not be resolved.
	ErrUnknownSchema = errors.New("unknown writer schema")
	// ErrMalformed means the framing was recognised but the Avro body did not decode, or
	// bytes were left over after it.
	ErrMalformed = errors.New("malformed avro body")
)

// SchemaResolver returns the schema text registered under a Confluent schema id.
type SchemaResolver func(ctx context.Context, id int) (string, error)

// Codec encodes and decodes one event type T.
//
// Encode frames with Avro single-object encoding unless UseConfluentID was called. Decode
// accepts both framings and always decodes with the writer's schema: by fingerprint among the
// current schema and those added with AddWriterSchema, or by registry id (resolving unknown ids
// with the SchemaResolver, if any). Fields missing from an older writer take their defaults.
// A Codec is safe for concurrent use.
type Codec[T any] struct {
	current *goavro.Codec
	canon   string // Parsing Canonical Form of the current schema
	fp      uint64 // its CRC-64-AVRO fingerprint
	to      func(T) map[string]any
	from    func(fields) (T, error)
	fast    func([]byte, T) []byte  // hand-written body encoder, or nil to use goavro
	fastDec func([]byte) (T, error) // hand-written body decoder for the current schema, or nil
	soe     [soeHeaderLen]byte

	mu      sync.RWMutex
	byFP    map[uint64]*goavro.Codec
	byID    map[int]*goavro.Codec
	writeID int // >0: Confluent framing with this id
	resolve SchemaResolver
}

func newCodec[T any](schema string, to func(T) map[string]any, from func(fields) (T, error)) (*Codec[T], error) {
	c, err := goavro.NewCodec(schema)
	if err != nil {
		return nil, fmt.Errorf("parse schema: %w", err)
	}
	canon, err := CanonicalForm(schema)
	if err != nil {
		return nil, err
	}
	fp := Fingerprint64([]byte(canon))
	cd := &Codec[T]{
		current: c,
		canon:   canon,
		fp:      fp,
		to:      to,
		from:    from,
		byFP:    map[uint64]*goavro.Codec{fp: c},
		byID:    map[int]*goavro.Codec{},
	}
	cd.soe[0], cd.soe[1] = soeMagic0, soeMagic1
	binary.LittleEndian.PutUint64(cd.soe[2:], fp)
	return cd, nil
}

// Schema returns the current schema in Avro Parsing Canonical Form.
func (c *Codec[T]) Schema() string { return c.canon }

// Fingerprint returns the CRC-64-AVRO (Rabin) fingerprint of the current schema's Parsing
// Canonical Form, as written in single-object headers.
func (c *Codec[T]) Fingerprint() uint64 { return c.fp }

// AddWriterSchema makes Decode accept single-object data written with an older schema version.
func (c *Codec[T]) AddWriterSchema(schema string) error {
	w, err := goavro.NewCodec(schema)
	if err != nil {
		return fmt.Errorf("parse writer schema: %w", err)
	}
	canon, err := CanonicalForm(schema)
	if err != nil {
		return err
	}
	fp := Fingerprint64([]byte(canon))
	c.mu.Lock()
	if _, known := c.byFP[fp]; !known { // the current schema keeps its own codec (and fast path)
		c.byFP[fp] = w
	}
	c.mu.Unlock()
	return nil
}

// UseConfluentID switches Encode to the Confluent wire format with the given registry id of
// the current schema; id 0 switches back to single-object encoding. resolve, if not nil,
// looks up writer schemas of unknown ids during Decode.
func (c *Codec[T]) UseConfluentID(id int, resolve SchemaResolver) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeID = id
	c.resolve = resolve
	if id > 0 {
		c.byID[id] = c.current
	}
}

// Encode appends the framed encoding of v to dst.
func (c *Codec[T]) Encode(dst []byte, v T) ([]byte, error) {
	c.mu.RLock()
	id := c.writeID
	c.mu.RUnlock()
	if c.fast != nil {
		if id > 0 {
			dst = append(dst, confluentMagic, 0, 0, 0, 0)
			binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(id))
		} else {
			dst = append(dst, c.soe[:]...)
		}
		return c.fast(dst, v), nil
	}
	native := c.to(v)
	if id > 0 {
		dst = append(dst, confluentMagic, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(dst[len(dst)-4:], uint32(id))
		out, err := c.current.BinaryFromNative(dst, native)
		if err != nil {
			return dst, fmt.Errorf("encode %s: %w", c.current.TypeName(), err)
		}
		return out, nil
	}
	out, err := c.current.BinaryFromNative(append(dst, c.soe[:]...), native)
	if err != nil {
		return dst, fmt.Errorf("encode %s: %w", c.current.TypeName(), err)
	}
	return out, nil
}

// Decode decodes one framed value. Errors wrap ErrFraming, ErrUnknownSchema or ErrMalformed.
func (c *Codec[T]) Decode(ctx context.Context, b []byte) (T, error) {
	var zero T
	w, body, err := c.writer(ctx, b)
	if err != nil {
		return zero, err
	}
	if c.fastDec != nil && w == c.current {
		v, err := c.fastDec(body)
		if err != nil {
			return zero, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		return v, nil
	}
	native, rest, err := w.NativeFromBinary(body)
	if err != nil {
		return zero, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if len(rest) > 0 {
		return zero, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(rest))
	}
	m, ok := native.(map[string]any)
	if !ok {
		return zero, fmt.Errorf("%w: not a record", ErrMalformed)
	}
	v, err := c.from(m)
	if err != nil {
		return zero, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v, nil
}

// writer finds the writer schema named by the framing and returns it with the Avro body.
func (c *Codec[T]) writer(ctx context.Context, b []byte) (*goavro.Codec, []byte, error) {
	switch {
	case len(b) >= soeHeaderLen && b[0] == soeMagic0 && b[1] == soeMagic1:
		fp := binary.LittleEndian.Uint64(b[2:soeHeaderLen])
		c.mu.RLock()
		w := c.byFP[fp]
		c.mu.RUnlock()
		if w == nil {
			return nil, nil, fmt.Errorf("%w: fingerprint %016x", ErrUnknownSchema, fp)
		}
		return w, b[soeHeaderLen:], nil
	case len(b) >= confluentHdrLen && b[0] == confluentMagic:
		id := int(binary.BigEndian.Uint32(b[1:confluentHdrLen]))
		w, err := c.byRegistryID(ctx, id)
		if err != nil {
			return nil, nil, err
		}
		return w, b[confluentHdrLen:], nil
	}
	return nil, nil, ErrFraming
}

func (c *Codec[T]) byRegistryID(ctx context.Context, id int) (*goavro.Codec, error) {
	c.mu.RLock()
	w, resolve := c.byID[id], c.resolve
	c.mu.RUnlock()
	if w != nil {
		return w, nil
	}
	if resolve == nil {
		return nil, fmt.Errorf("%w: registry id %d (no registry configured)", ErrUnknownSchema, id)
	}
	text, err := resolve(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("%w: registry id %d: %w", ErrUnknownSchema, id, err)
	}
	w, err = goavro.NewCodec(text)
	if err != nil {
		return nil, fmt.Errorf("%w: registry id %d: %w", ErrUnknownSchema, id, err)
	}
	c.mu.Lock()
	c.byID[id] = w
	c.mu.Unlock()
	return w, nil
}

// TextualFromValue returns the Avro JSON encoding of v (as used by the golden vectors),
// indented and with object keys sorted so that the output is stable.
func (c *Codec[T]) TextualFromValue(v T) ([]byte, error) {
	raw, err := c.current.TextualFromNative(nil, c.to(v))
	if err != nil {
		return nil, fmt.Errorf("encode %s as json: %w", c.current.TypeName(), err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("reparse json: %w", err)
	}
	return json.MarshalIndent(tree, "", "  ")
}

// ValueFromTextual parses the Avro JSON encoding of one value.
func (c *Codec[T]) ValueFromTextual(b []byte) (T, error) {
	var zero T
	native, _, err := c.current.NativeFromTextual(b)
	if err != nil {
		return zero, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	m, ok := native.(map[string]any)
	if !ok {
		return zero, fmt.Errorf("%w: not a record", ErrMalformed)
	}
	return c.from(m)
}

// maxBlockCount bounds Avro array and map block counts. goavro preallocates a slice of the
// declared count before reading any item, so a 15-byte hostile record declaring 2^31 items
// would allocate 32 GiB; no valid Understudy record (at most a few MiB) has more items than
// bytes. This sets goavro's package-wide limits for the whole process.
const (
	maxBlockCount = 1 << 20
	maxBlockSize  = 64 << 20
)

func init() {
	if goavro.MaxBlockCount > maxBlockCount {
		goavro.MaxBlockCount = maxBlockCount
	}
	if goavro.MaxBlockSize > maxBlockSize {
		goavro.MaxBlockSize = maxBlockSize
	}
}
