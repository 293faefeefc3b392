package secretmap

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	got, err := Parse([]byte(`{"a/b/c":"c2VjcmV0","x/y/z":"AAEC\nAw=="}`))
	if err != nil {
		t.Fatal(err)
	}
	if string(got["a/b/c"]) != "secret" || string(got["x/y/z"]) != "\x00\x01\x02\x03" {
		t.Fatalf("Parse = %q", got)
	}
	for _, tc := range []struct{ in, want string }{
		{`[]`, "not a JSON object"},
		{``, "not a JSON object"},
		{`{"a":"c2VjcmV0",}`, "invalid JSON at byte"},
		{`{"a":1}`, `entry "a" is not a JSON string`},
		{`{"a":null}`, `entry "a" is not a JSON string`},
		{`{"a":"c2VjcmV0","b":"!!!!"}`, `entry "b": value is not standard base64`},
		{`{"a":"c2VjcmV0="}`, `entry "a": value is not standard base64`},
	} {
		_, err := Parse([]byte(tc.in))
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) error %v, want %q", tc.in, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "c2VjcmV0") {
			t.Errorf("Parse(%q) error quotes a value: %v", tc.in, err)
		}
	}
}

func TestReadFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte("12345"), 0o600); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(f, 5); err != nil || string(b) != "12345" {
		t.Fatalf("ReadFile at the limit = %q, %v", b, err)
	}
	if _, err := ReadFile(f, 4); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), f) {
		t.Fatalf("ReadFile over the limit: %v", err)
	}
	if _, err := ReadFile(f+"-missing", 4); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile missing: %v", err)
	}
}
