// Package redact removes personal data from captured JSON bodies before they leave the tap:
// configured JSON pointers are removed, or replaced by a keyed hash so that equal values stay
// joinable without being readable. A "*" segment matches every array element or object member.
package redact

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrNotJSON means a body that has redaction rules is not (complete) JSON, so it cannot be
// redacted; the caller must not publish it.
var ErrNotJSON = errors.New("body is not complete JSON: cannot redact")

// HashPrefix starts every hashed value.
const HashPrefix = "hmac-sha256:"

// Rules are compiled redaction rules. The zero value redacts nothing.
type Rules struct {
	remove [][]string
	hash   [][]string
	key    []byte
}

// Compile returns rules for JSON pointers to remove and to hash with key. Hashing needs a key.
func Compile(remove, hash []string, key []byte) (Rules, error) {
	if len(hash) > 0 && len(key) == 0 {
		return Rules{}, errors.New("redaction.hash needs a hash key (set UNDERSTUDY_TAP_REDACTION_KEY, or --redaction.key)")
	}
	r := Rules{key: key}
	for _, p := range remove {
		r.remove = append(r.remove, split(p))
	}
	for _, p := range hash {
		r.hash = append(r.hash, split(p))
	}
	return r, nil
}

func split(pointer string) []string {
	parts := strings.Split(strings.TrimPrefix(pointer, "/"), "/")
	for i, p := range parts {
		parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(p)
	}
	return parts
}

// Empty reports whether the rules change nothing.
func (r Rules) Empty() bool { return len(r.remove) == 0 && len(r.hash) == 0 }

// Apply returns body with the rules applied. Empty rules return body unchanged. An empty body
// is returned as is. Otherwise body must be complete JSON, or Apply returns ErrNotJSON.
func (r Rules) Apply(body []byte) ([]byte, error) {
	if r.Empty() || len(bytes.TrimSpace(body)) == 0 {
		return body, nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotJSON, err)
	}
	if dec.More() {
		return nil, ErrNotJSON
	}
	for _, p := range r.remove {
		doc = walk(doc, p, func(any) (any, bool) { return nil, false })
	}
	for _, p := range r.hash {
		doc = walk(doc, p, func(v any) (any, bool) { return r.digest(v), true })
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("re-encode redacted body: %w", err)
	}
	return out, nil
}

func (r Rules) digest(v any) string {
	b, _ := json.Marshal(v)
	m := hmac.New(sha256.New, r.key)
	m.Write(b)
	return HashPrefix + hex.EncodeToString(m.Sum(nil))
}

// walk applies fn at every node path reaches. fn returns the replacement and whether to keep
// the node (false deletes it from its parent).
func walk(node any, path []string, fn func(any) (any, bool)) any {
	if len(path) == 0 {
		v, _ := fn(node)
		return v
	}
	head, rest := path[0], path[1:]
	switch t := node.(type) {
	case map[string]any:
		for k, child := range t {
			if head != "*" && k != head {
				continue
			}
			if len(rest) == 0 {
				if v, keep := fn(child); keep {
					t[k] = v
				} else {
					delete(t, k)
				}
				continue
			}
			t[k] = walk(child, rest, fn)
		}
	case []any:
		for i := range t {
			if head != "*" && head != strconv.Itoa(i) {
				continue
			}
			if len(rest) == 0 {
				if v, keep := fn(t[i]); keep {
					t[i] = v
				} else {
					t[i] = nil // removing an element would shift the others' meaning
				}
				continue
			}
			t[i] = walk(t[i], rest, fn)
		}
	}
	return node
}
