package kbs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// members is a JSON object split into its members. The helpers around it
// decode protocol messages the way serde's derived Deserialize does, which
// encoding/json into a struct does not: member names are matched exactly
// (not case-insensitively), a member present twice is an error, a required
// member must be present and of the right type (null is not a string), and
// unknown members are ignored.
type members map[string]json.RawMessage

// object decodes data, which must be exactly one JSON object.
func object(data []byte) (members, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, fmt.Errorf("invalid type: %s, expected an object", describe(tok))
	}
	m := members{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("invalid JSON: object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("invalid JSON in member `%s`: %w", key, err)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("duplicate field `%s`", key)
		}
		m[key] = v
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("trailing characters after the JSON object")
	}
	return m, nil
}

// describe names a JSON token's type as serde does in its errors.
func describe(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "sequence"
		}
		return "map"
	case string:
		return fmt.Sprintf("string %q", v)
	case float64:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return "value"
}

// kind returns the JSON type of a raw value.
func kind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "map"
	case '[':
		return "sequence"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}

// value returns a required member of any type (serde_json::Value: null is
// accepted, absence is not).
func (m members) value(key string) (json.RawMessage, error) {
	v, ok := m[key]
	if !ok {
		return nil, fmt.Errorf("missing field `%s`", key)
	}
	return v, nil
}

// str returns a required string member.
func (m members) str(key string) (string, error) {
	v, err := m.value(key)
	if err != nil {
		return "", err
	}
	if kind(v) != "string" {
		return "", fmt.Errorf("field `%s`: invalid type: %s, expected a string", key, kind(v))
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("field `%s`: %w", key, err)
	}
	return s, nil
}

// obj returns a required object member.
func (m members) obj(key string) (members, error) {
	v, err := m.value(key)
	if err != nil {
		return nil, err
	}
	if kind(v) != "map" {
		return nil, fmt.Errorf("field `%s`: invalid type: %s, expected an object", key, kind(v))
	}
	sub, err := object(v)
	if err != nil {
		return nil, fmt.Errorf("field `%s`: %w", key, err)
	}
	return sub, nil
}
