package jcs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Canonicalize parses the JSON document data and returns its canonical
// form. Duplicate object keys and invalid UTF-8 are errors, as RFC 8785
// requires (I-JSON).
func Canonicalize(data []byte) ([]byte, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("canonicalize JSON: input is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := canonValue(dec, &buf); err != nil {
		return nil, fmt.Errorf("canonicalize JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("canonicalize JSON: trailing data after the value")
	}
	return buf.Bytes(), nil
}

// Marshal encodes v with encoding/json and returns the canonical form.
func Marshal(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("canonicalize JSON: %w", err)
	}
	return Canonicalize(raw)
}

func canonValue(dec *json.Decoder, buf *bytes.Buffer) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			return canonObject(dec, buf)
		case '[':
			return canonArray(dec, buf)
		}
		return fmt.Errorf("unexpected %q", t)
	case string:
		return writeString(buf, t)
	case json.Number:
		return writeNumber(buf, t)
	case bool:
		buf.WriteString(strconv.FormatBool(t))
	case nil:
		buf.WriteString("null")
	default:
		return fmt.Errorf("unexpected token %v", tok)
	}
	return nil
}

type member struct {
	key   string
	value []byte
}

func canonObject(dec *json.Decoder, buf *bytes.Buffer) error {
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return fmt.Errorf("object key is %v, not a string", tok)
		}
		if seen[key] {
			return fmt.Errorf("duplicate object key %q", key)
		}
		seen[key] = true
		var v bytes.Buffer
		if err := canonValue(dec, &v); err != nil {
			return err
		}
		members = append(members, member{key, v.Bytes()})
	}
	if _, err := dec.Token(); err != nil { // '}'
		return err
	}
	// RFC 8785 §3.2.3: sort by the UTF-16 code units of the keys.
	slices.SortFunc(members, func(a, b member) int {
		return slices.Compare(utf16.Encode([]rune(a.key)), utf16.Encode([]rune(b.key)))
	})
	buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := writeString(buf, m.key); err != nil {
			return err
		}
		buf.WriteByte(':')
		buf.Write(m.value)
	}
	buf.WriteByte('}')
	return nil
}

func canonArray(dec *json.Decoder, buf *bytes.Buffer) error {
	buf.WriteByte('[')
	for i := 0; dec.More(); i++ {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := canonValue(dec, buf); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil { // ']'
		return err
	}
	buf.WriteByte(']')
	return nil
}

// writeString writes s as ECMAScript's JSON.stringify does (RFC 8785 §3.2.2.2).
func writeString(buf *bytes.Buffer, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("string is not valid UTF-8")
	}
	buf.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			buf.WriteString(`\"`)
		case '\\':
			buf.WriteString(`\\`)
		case '\b':
			buf.WriteString(`\b`)
		case '\f':
			buf.WriteString(`\f`)
		case '\n':
			buf.WriteString(`\n`)
		case '\r':
			buf.WriteString(`\r`)
		case '\t':
			buf.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(buf, `\u%04x`, r)
			} else {
				buf.WriteRune(r)
			}
		}
	}
	buf.WriteByte('"')
	return nil
}

// writeNumber writes n as ECMAScript's Number.prototype.toString does for
// the IEEE 754 double nearest to it (RFC 8785 §3.2.2.3).
func writeNumber(buf *bytes.Buffer, n json.Number) error {
	f, err := strconv.ParseFloat(string(n), 64)
	if err != nil {
		return fmt.Errorf("number %s: %w", n, err)
	}
	if math.IsInf(f, 0) || math.IsNaN(f) {
		return fmt.Errorf("number %s is not finite", n)
	}
	buf.WriteString(FormatNumber(f))
	return nil
}

// FormatNumber formats f as ECMAScript's Number.prototype.toString.
func FormatNumber(f float64) string {
	if f == 0 {
		return "0" // also for -0
	}
	neg := f < 0
	if neg {
		f = -f
	}
	// Shortest round-tripping digits and decimal exponent: d.ddddde±x.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	k := len(digits)
	nExp := exp + 1 // the decimal point sits after nExp digits
	var out string
	switch {
	case k <= nExp && nExp <= 21:
		out = digits + strings.Repeat("0", nExp-k)
	case 0 < nExp && nExp <= 21:
		out = digits[:nExp] + "." + digits[nExp:]
	case -6 < nExp && nExp <= 0:
		out = "0." + strings.Repeat("0", -nExp) + digits
	default:
		sign := "+"
		if nExp-1 < 0 {
			sign = "-"
		}
		d := digits[:1]
		if k > 1 {
			d += "." + digits[1:]
		}
		out = d + "e" + sign + strconv.Itoa(abs(nExp-1))
	}
	if neg {
		return "-" + out
	}
	return out
}

func abs(i int) int {
	if i < 0 {
		return -i
	}
	return i
}
