package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// KeyError reports a value guestd cannot accept. Source is the file, the
// kernel command line or "environment"; Key is the dotted key path, kernel
// parameter or environment variable.
type KeyError struct {
	Source string
	Key    string
	Reason string
}

func (e *KeyError) Error() string {
	if e.Source == "" {
		return e.Key + ": " + e.Reason
	}
	return e.Source + ": " + e.Key + ": " + e.Reason
}

// Source labels used in KeyError when no file is involved.
const (
	SourceCmdline = "kernel command line"
	SourceEnv     = "environment"
)

// decodeTree parses a config document into a generic tree. Like upstream's
// config crate, the format follows the file name: ".json" is JSON, anything
// else is TOML.
func decodeTree(name string, data []byte) (map[string]any, error) {
	if strings.EqualFold(filepath.Ext(name), ".json") {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("%s: invalid JSON: %w", name, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("%s: invalid JSON: data after the top-level object", name)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s: invalid JSON: top level must be an object, got %s", name, describe(v))
		}
		return m, nil
	}
	var m map[string]any
	if _, err := toml.Decode(string(data), &m); err != nil {
		return nil, fmt.Errorf("%s: invalid TOML: %w", name, err)
	}
	if m == nil {
		m = map[string]any{}
	}
	return m, nil
}

// reader carries the source name and the first error met while reading a
// tree; table methods stop doing work once it is set.
type reader struct {
	src string
	err error
}

func (r *reader) fail(key, format string, args ...any) {
	if r.err == nil {
		r.err = &KeyError{Source: r.src, Key: key, Reason: fmt.Sprintf(format, args...)}
	}
}

// table is one TOML table or JSON object being read into typed fields. It
// remembers which keys were read so that the rest can be reported.
type table struct {
	r    *reader
	path string
	m    map[string]any
	used map[string]bool
	kids []*table
}

func newTable(r *reader, path string, m map[string]any) *table {
	return &table{r: r, path: path, m: m, used: map[string]bool{}}
}

// keyPath renders the dotted path of key k in t, quoting keys that are not
// bare TOML keys.
func (t *table) keyPath(k string) string {
	if !isBareKey(k) {
		k = strconv.Quote(k)
	}
	if t.path == "" {
		return k
	}
	return t.path + "." + k
}

func isBareKey(k string) bool {
	if k == "" {
		return false
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// get returns the value of k and marks it as read. A JSON null counts as
// absent, like serde's Option.
func (t *table) get(k string) (any, bool) {
	if t.r.err != nil {
		return nil, false
	}
	v, ok := t.m[k]
	if !ok {
		return nil, false
	}
	t.used[k] = true
	if v == nil {
		return nil, false
	}
	return v, true
}

func (t *table) missing(k string) {
	t.r.fail(t.keyPath(k), "is required")
}

func (t *table) str(k string) (string, bool) {
	v, ok := t.get(k)
	if !ok {
		return "", false
	}
	s, isStr := v.(string)
	if !isStr {
		t.r.fail(t.keyPath(k), "expected a string, got %s", describe(v))
		return "", false
	}
	return s, true
}

func (t *table) boolean(k string) (bool, bool) {
	v, ok := t.get(k)
	if !ok {
		return false, false
	}
	b, isBool := v.(bool)
	if !isBool {
		t.r.fail(t.keyPath(k), "expected true or false, got %s", describe(v))
		return false, false
	}
	return b, true
}

func (t *table) integer(k string) (int64, bool) {
	v, ok := t.get(k)
	if !ok {
		return 0, false
	}
	switch n := v.(type) {
	case int64:
		return n, true
	case json.Number:
		i, err := strconv.ParseInt(string(n), 10, 64)
		if err == nil {
			return i, true
		}
	}
	t.r.fail(t.keyPath(k), "expected an integer, got %s", describe(v))
	return 0, false
}

func (t *table) strings(k string) ([]string, bool) {
	v, ok := t.get(k)
	if !ok {
		return nil, false
	}
	arr, isArr := v.([]any)
	if !isArr {
		t.r.fail(t.keyPath(k), "expected an array of strings, got %s", describe(v))
		return nil, false
	}
	out := make([]string, 0, len(arr))
	for i, e := range arr {
		s, isStr := e.(string)
		if !isStr {
			t.r.fail(fmt.Sprintf("%s[%d]", t.keyPath(k), i), "expected a string, got %s", describe(e))
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}

func (t *table) sub(k string) (*table, bool) {
	v, ok := t.get(k)
	if !ok {
		return nil, false
	}
	m, isMap := v.(map[string]any)
	if !isMap {
		t.r.fail(t.keyPath(k), "expected a table, got %s", describe(v))
		return nil, false
	}
	kid := newTable(t.r, t.keyPath(k), m)
	t.kids = append(t.kids, kid)
	return kid, true
}

// tables reads an array of tables ([[k]] in TOML, an array of objects in
// JSON, or an inline array of inline tables).
func (t *table) tables(k string) ([]*table, bool) {
	v, ok := t.get(k)
	if !ok {
		return nil, false
	}
	var maps []map[string]any
	switch a := v.(type) {
	case []map[string]any:
		maps = a
	case []any:
		for i, e := range a {
			m, isMap := e.(map[string]any)
			if !isMap {
				t.r.fail(fmt.Sprintf("%s[%d]", t.keyPath(k), i), "expected a table, got %s", describe(e))
				return nil, false
			}
			maps = append(maps, m)
		}
	default:
		t.r.fail(t.keyPath(k), "expected an array of tables, got %s", describe(v))
		return nil, false
	}
	out := make([]*table, 0, len(maps))
	for i, m := range maps {
		kid := newTable(t.r, fmt.Sprintf("%s[%d]", t.keyPath(k), i), m)
		t.kids = append(t.kids, kid)
		out = append(out, kid)
	}
	return out, true
}

// unknown lists, sorted, the dotted paths of keys in t and its read
// sub-tables that nothing read.
func (t *table) unknown() []string {
	var out []string
	var walk func(*table)
	walk = func(x *table) {
		for k := range x.m {
			if !x.used[k] {
				out = append(out, x.keyPath(k))
			}
		}
		for _, kid := range x.kids {
			walk(kid)
		}
	}
	walk(t)
	sort.Strings(out)
	return out
}

// describe names the type of a decoded value, with a short rendering of
// scalars, for error messages.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string " + quoteShort(x)
	case bool:
		return "boolean " + strconv.FormatBool(x)
	case int64:
		return "integer " + strconv.FormatInt(x, 10)
	case json.Number:
		return "number " + quoteShort(string(x))
	case float64:
		return "float " + strconv.FormatFloat(x, 'g', -1, 64)
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// quoteShort quotes s for an error message, cutting it at 64 bytes.
func quoteShort(s string) string {
	const max = 64
	if len(s) <= max {
		return strconv.Quote(s)
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strconv.Quote(s[:cut]) + "..."
}
