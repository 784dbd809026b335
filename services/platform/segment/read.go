package segment

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/understudy-ml/understudy/schemas"
)

// Empty is the value of a key whose header or string field is present but empty.
const Empty = "(empty)"

// RequestLevel reports whether k's value belongs to the request (every key but a shadow's
// model version, which the aggregator reads from each shadow's outcome).
func (k Key) RequestLevel() bool { return k.ModelVersion != VersionShadow }

// Values returns the request-level values (RequestLevel) of keys for one captured request
// whose champion answered as model version championVersion. Every key gets a value:
// schemas.SegmentUnknown when it cannot be read. Values are cut to schemas.MaxSegmentValue
// bytes, control characters replaced, so that they always pass schemas.Limits.
func Values(keys []Key, req schemas.HTTPRequest, championVersion string) []schemas.SegmentValue {
	if len(keys) == 0 {
		return nil
	}
	var (
		doc    any
		parsed bool
		docOK  bool
	)
	out := make([]schemas.SegmentValue, 0, len(keys))
	for _, k := range keys {
		if !k.RequestLevel() {
			continue
		}
		v := ""
		switch {
		case k.Header != "":
			v = header(req.Headers, k.Header)
		case k.Pointer != "":
			if !parsed {
				parsed = true
				docOK = !req.Truncated && decode(req.Body, &doc) == nil
			}
			if docOK {
				v = pointerValue(doc, k)
			}
		case k.ModelVersion == VersionChampion:
			v = championVersion
		}
		out = append(out, schemas.SegmentValue{Key: k.Name, Value: clean(v)})
	}
	return out
}

// ShadowVersion is the value of a shadow model_version key for an outcome of version v.
func ShadowVersion(v string) string { return clean(v) }

func header(hs map[string]string, name string) string {
	if v, ok := hs[name]; ok {
		return emptyAs(v)
	}
	for k, v := range hs {
		if strings.EqualFold(k, name) {
			return emptyAs(v)
		}
	}
	return ""
}

func emptyAs(v string) string {
	if v == "" {
		return Empty
	}
	return v
}

func decode(b []byte, into *any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	return d.Decode(into)
}

// pointerValue evaluates k.Pointer on doc and names the scalar there ("" when none).
func pointerValue(doc any, k Key) string {
	cur := doc
	for _, tok := range strings.Split(k.Pointer[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch c := cur.(type) {
		case map[string]any:
			next, ok := c[tok]
			if !ok {
				return ""
			}
			cur = next
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(c) || (len(tok) > 1 && tok[0] == '0') {
				return ""
			}
			cur = c[i]
		default:
			return ""
		}
	}
	if len(k.Buckets) > 0 {
		n, ok := cur.(json.Number)
		if !ok {
			return ""
		}
		x, err := n.Float64()
		if err != nil {
			return ""
		}
		return Bucket(k.Buckets, x)
	}
	switch v := cur.(type) {
	case string:
		return emptyAs(v)
	case json.Number:
		return v.String()
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return "null"
	}
	return "" // objects and arrays are not segment values
}

// clean makes v a valid segment value: unknown when empty, valid UTF-8 without control
// characters, at most schemas.MaxSegmentValue bytes.
func clean(v string) string {
	if v == "" {
		return schemas.SegmentUnknown
	}
	v = strings.ToValidUTF8(v, "?")
	v = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, v)
	if len(v) > schemas.MaxSegmentValue {
		cut := schemas.MaxSegmentValue
		for cut > 0 && !utf8.RuneStart(v[cut]) {
			cut--
		}
		v = v[:cut]
	}
	return v
}
