package schemas

import (
	"encoding/json"
	"fmt"
	"strings"
)

// CheckBackward reports whether data written with writer can be read with reader, following the
// Avro specification's schema resolution rules (the "BACKWARD" compatibility of schema
// registries): every reader field is present in the writer or has a default, types match or
// promote (int→long→float→double, string↔bytes), and every writer union branch is readable.
// It returns nil when compatible, or an error listing every incompatibility with its path.
func CheckBackward(reader, writer string) error {
	var r, w any
	if err := json.Unmarshal([]byte(reader), &r); err != nil {
		return fmt.Errorf("reader schema: %w", err)
	}
	if err := json.Unmarshal([]byte(writer), &w); err != nil {
		return fmt.Errorf("writer schema: %w", err)
	}
	c := &compatChecker{rNamed: map[string]any{}, wNamed: map[string]any{}}
	collectNamed(r, "", c.rNamed)
	collectNamed(w, "", c.wNamed)
	c.check("$", r, w)
	if len(c.problems) > 0 {
		return fmt.Errorf("incompatible: %s", strings.Join(c.problems, "; "))
	}
	return nil
}

type compatChecker struct {
	rNamed, wNamed map[string]any
	problems       []string
	seen           map[string]bool
}

func fullName(m map[string]any, ns string) (string, string) {
	name, _ := m["name"].(string)
	if n, ok := m["namespace"].(string); ok {
		ns = n
	}
	if strings.Contains(name, ".") {
		return name, name[:strings.LastIndex(name, ".")]
	}
	if ns == "" {
		return name, ns
	}
	return ns + "." + name, ns
}

func collectNamed(s any, ns string, into map[string]any) {
	switch t := s.(type) {
	case []any:
		for _, b := range t {
			collectNamed(b, ns, into)
		}
	case map[string]any:
		typ, _ := t["type"].(string)
		switch typ {
		case "record", "error", "enum", "fixed":
			full, inner := fullName(t, ns)
			into[full] = t
			into[full[strings.LastIndex(full, ".")+1:]] = t
			if fs, ok := t["fields"].([]any); ok {
				for _, f := range fs {
					if fm, ok := f.(map[string]any); ok {
						collectNamed(fm["type"], inner, into)
					}
				}
			}
		case "array":
			collectNamed(t["items"], ns, into)
		case "map":
			collectNamed(t["values"], ns, into)
		default:
			collectNamed(t["type"], ns, into)
		}
	}
}

// deref turns a schema into (kind, node): primitives by name, named references resolved.
func deref(s any, named map[string]any) (string, any) {
	switch t := s.(type) {
	case string:
		switch t {
		case "null", "boolean", "int", "long", "float", "double", "bytes", "string":
			return t, t
		}
		if n, ok := named[t]; ok {
			return deref(n, named)
		}
		return "unknown:" + t, nil
	case []any:
		return "union", t
	case map[string]any:
		typ, _ := t["type"].(string)
		switch typ {
		case "record", "error", "enum", "fixed", "array", "map":
			return typ, t
		}
		return deref(t["type"], named) // primitive with attributes, e.g. logicalType
	}
	return "unknown", nil
}

var promotions = map[string][]string{
	"int":    {"long", "float", "double"},
	"long":   {"float", "double"},
	"float":  {"double"},
	"string": {"bytes"},
	"bytes":  {"string"},
}

func (c *compatChecker) fail(path, format string, args ...any) {
	c.problems = append(c.problems, path+": "+fmt.Sprintf(format, args...))
}

// readable reports (without recording problems) whether reader r can read writer w.
func (c *compatChecker) readable(r, w any) bool {
	sub := &compatChecker{rNamed: c.rNamed, wNamed: c.wNamed, seen: c.seen}
	sub.check("", r, w)
	return len(sub.problems) == 0
}

func (c *compatChecker) check(path string, r, w any) {
	rk, rn := deref(r, c.rNamed)
	wk, wn := deref(w, c.wNamed)
	if wk == "union" {
		for i, wb := range wn.([]any) {
			if rk == "union" {
				if !c.anyBranchReads(rn.([]any), wb) {
					c.fail(fmt.Sprintf("%s<branch %d>", path, i), "writer union branch %s has no readable reader branch", kindName(wb, c.wNamed))
				}
				continue
			}
			c.check(fmt.Sprintf("%s<branch %d>", path, i), r, wb)
		}
		return
	}
	if rk == "union" {
		if !c.anyBranchReads(rn.([]any), w) {
			c.fail(path, "reader union has no branch for writer type %s", wk)
		}
		return
	}
	if rk != wk {
		for _, p := range promotions[wk] {
			if p == rk {
				return
			}
		}
		c.fail(path, "writer type %s cannot be read as %s", wk, rk)
		return
	}
	switch rk {
	case "record", "error":
		rm, wm := rn.(map[string]any), wn.(map[string]any)
		key := path + "|" + fmt.Sprint(rm["name"])
		if c.seen == nil {
			c.seen = map[string]bool{}
		}
		if c.seen[key] {
			return
		}
		c.seen[key] = true
		wFields := map[string]map[string]any{}
		for _, f := range asSlice(wm["fields"]) {
			fm, _ := f.(map[string]any)
			wFields[fmt.Sprint(fm["name"])] = fm
		}
		for _, f := range asSlice(rm["fields"]) {
			fm, _ := f.(map[string]any)
			name := fmt.Sprint(fm["name"])
			wf, ok := wFields[name]
			if !ok {
				for _, a := range asSlice(fm["aliases"]) {
					if wf, ok = wFields[fmt.Sprint(a)]; ok {
						break
					}
				}
			}
			if !ok {
				if _, hasDefault := fm["default"]; !hasDefault {
					c.fail(path+"."+name, "field added without a default")
				}
				continue
			}
			c.check(path+"."+name, fm["type"], wf["type"])
		}
	case "enum":
		rm, wm := rn.(map[string]any), wn.(map[string]any)
		symbols := map[string]bool{}
		for _, s := range asSlice(rm["symbols"]) {
			symbols[fmt.Sprint(s)] = true
		}
		_, hasDefault := rm["default"]
		for _, s := range asSlice(wm["symbols"]) {
			if !symbols[fmt.Sprint(s)] && !hasDefault {
				c.fail(path, "enum symbol %v removed without a reader default", s)
			}
		}
	case "fixed":
		if fmt.Sprint(rn.(map[string]any)["size"]) != fmt.Sprint(wn.(map[string]any)["size"]) {
			c.fail(path, "fixed size changed")
		}
	case "array":
		c.check(path+"[]", rn.(map[string]any)["items"], wn.(map[string]any)["items"])
	case "map":
		c.check(path+"{}", rn.(map[string]any)["values"], wn.(map[string]any)["values"])
	}
}

func (c *compatChecker) anyBranchReads(branches []any, w any) bool {
	for _, b := range branches {
		if c.readable(b, w) {
			return true
		}
	}
	return false
}

func kindName(s any, named map[string]any) string {
	k, _ := deref(s, named)
	return k
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}
