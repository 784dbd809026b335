package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// This file implements the Avro specification's Parsing Canonical Form and its CRC-64-AVRO
// (Rabin) fingerprint. goavro's own canonical form keeps logical-type primitives as
// {"type":"long"} instead of "long", so its fingerprints differ from those of the Java, Python
// and other implementations for every schema with a timestamp; single-object framing must use
// the specification's fingerprint for other libraries to recognise our events.

var primitives = map[string]bool{
	"null": true, "boolean": true, "int": true, "long": true,
	"float": true, "double": true, "bytes": true, "string": true,
}

// CanonicalForm returns the Parsing Canonical Form of a schema.
func CanonicalForm(schema string) (string, error) {
	var s any
	dec := json.NewDecoder(strings.NewReader(schema))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		return "", fmt.Errorf("canonical form: %w", err)
	}
	var b bytes.Buffer
	if err := canon(&b, s, ""); err != nil {
		return "", err
	}
	return b.String(), nil
}

func fullname(name, ns string) string {
	if strings.Contains(name, ".") || ns == "" {
		return name
	}
	return ns + "." + name
}

func writeJSONString(b *bytes.Buffer, s string) {
	out, _ := json.Marshal(s)
	b.Write(out)
}

func canon(b *bytes.Buffer, s any, ns string) error {
	switch t := s.(type) {
	case string:
		if primitives[t] {
			writeJSONString(b, t)
		} else {
			writeJSONString(b, fullname(t, ns))
		}
		return nil
	case []any:
		b.WriteByte('[')
		for i, branch := range t {
			if i > 0 {
				b.WriteByte(',')
			}
			if err := canon(b, branch, ns); err != nil {
				return err
			}
		}
		b.WriteByte(']')
		return nil
	case map[string]any:
		typ, isString := t["type"].(string)
		if !isString {
			return canon(b, t["type"], ns)
		}
		if primitives[typ] {
			writeJSONString(b, typ)
			return nil
		}
		switch typ {
		case "record", "error", "enum", "fixed":
			name, _ := t["name"].(string)
			if n, ok := t["namespace"].(string); ok && !strings.Contains(name, ".") {
				ns = n
			}
			full := fullname(name, ns)
			if i := strings.LastIndex(full, "."); i >= 0 {
				ns = full[:i]
			}
			b.WriteString(`{"name":`)
			writeJSONString(b, full)
			b.WriteString(`,"type":`)
			writeJSONString(b, typ)
			switch typ {
			case "enum":
				b.WriteString(`,"symbols":`)
				syms, _ := json.Marshal(t["symbols"])
				b.Write(syms)
			case "fixed":
				fmt.Fprintf(b, `,"size":%v`, t["size"])
			default:
				b.WriteString(`,"fields":[`)
				fields, _ := t["fields"].([]any)
				for i, f := range fields {
					fm, _ := f.(map[string]any)
					if i > 0 {
						b.WriteByte(',')
					}
					b.WriteString(`{"name":`)
					fname, _ := fm["name"].(string)
					writeJSONString(b, fname)
					b.WriteString(`,"type":`)
					if err := canon(b, fm["type"], ns); err != nil {
						return err
					}
					b.WriteByte('}')
				}
				b.WriteByte(']')
			}
			b.WriteByte('}')
			return nil
		case "array":
			b.WriteString(`{"type":"array","items":`)
			if err := canon(b, t["items"], ns); err != nil {
				return err
			}
			b.WriteByte('}')
			return nil
		case "map":
			b.WriteString(`{"type":"map","values":`)
			if err := canon(b, t["values"], ns); err != nil {
				return err
			}
			b.WriteByte('}')
			return nil
		}
		writeJSONString(b, fullname(typ, ns)) // a named type referenced as {"type": "Name"}
		return nil
	}
	return fmt.Errorf("canonical form: unexpected schema element %T", s)
}

const rabinEmpty = 0xc15d213aa4d7a795

var rabinTable = func() (t [256]uint64) {
	for i := range t {
		fp := uint64(i)
		for range 8 {
			fp = (fp >> 1) ^ (rabinEmpty & -(fp & 1))
		}
		t[i] = fp
	}
	return t
}()

// Fingerprint64 returns the CRC-64-AVRO (Rabin) fingerprint of b, as the Avro specification
// defines it for single-object encoding.
func Fingerprint64(b []byte) uint64 {
	fp := uint64(rabinEmpty)
	for _, c := range b {
		fp = (fp >> 8) ^ rabinTable[byte(fp)^c]
	}
	return fp
}
