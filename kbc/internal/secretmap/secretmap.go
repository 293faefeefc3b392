package secretmap

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
)

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed secret map")

// Parse decodes raw. Every value must be a JSON string holding standard
// padded base64 (line breaks ignored); one bad entry fails the whole map,
// naming its ID.
func Parse(raw []byte) (map[string][]byte, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("not a JSON object: %w", ErrMalformed)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		// JSON errors are reduced to an offset: their text can quote input.
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, ErrMalformed)
		}
		return nil, fmt.Errorf("not a JSON object: %w", ErrMalformed)
	}
	ids := make([]string, 0, len(obj))
	for id := range obj {
		ids = append(ids, id)
	}
	slices.Sort(ids) // a stable error
	out := make(map[string][]byte, len(obj))
	for _, id := range ids {
		val := obj[id]
		var s string
		if len(val) == 0 || val[0] != '"' || json.Unmarshal(val, &s) != nil {
			Wipe(out)
			return nil, fmt.Errorf("entry %q is not a JSON string: %w", id, ErrMalformed)
		}
		dst := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
		n, err := base64.StdEncoding.Strict().Decode(dst, []byte(s))
		if err != nil {
			clear(dst)
			Wipe(out)
			return nil, fmt.Errorf("entry %q: value is not standard base64 (%v): %w", id, err, ErrMalformed)
		}
		out[id] = dst[:n]
	}
	return out, nil
}

// Wipe zeroes every value of m. It is best effort: the Go runtime may hold
// other copies.
func Wipe(m map[string][]byte) {
	for _, v := range m {
		clear(v)
	}
}

// ErrTooLarge is wrapped by ReadFile for a file over its limit.
var ErrTooLarge = errors.New("file too large")

// ReadFile reads file, refusing one larger than limit bytes. Errors from
// the file system name the file; a partial read is wiped.
func ReadFile(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		clear(raw)
		return nil, err
	}
	if int64(len(raw)) > limit {
		clear(raw)
		return nil, fmt.Errorf("%s: %w: over the %d byte limit", file, ErrTooLarge, limit)
	}
	return raw, nil
}
