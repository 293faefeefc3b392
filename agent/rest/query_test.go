package rest

import (
	"reflect"
	"testing"
)

func TestParseQuery(t *testing.T) {
	tests := []struct {
		raw  string
		want map[string]string
	}{
		{"", map[string]string{}},
		{"a=1", map[string]string{"a": "1"}},
		{"a=1&b=2", map[string]string{"a": "1", "b": "2"}},
		{"a", map[string]string{"a": ""}},
		{"a=", map[string]string{"a": ""}},
		{"&&a=1&", map[string]string{"a": "1"}},
		{"a=x=y", map[string]string{"a": "x=y"}},
		{"a=1&a=2", map[string]string{"a": "2"}},
		{"a=1;b=2", map[string]string{"a": "1;b=2"}},
		{"a=b+c", map[string]string{"a": "b c"}},
		{"a%5Fb=%41%42", map[string]string{"a_b": "AB"}},
		{"a=%ff%FE", map[string]string{"a": "\xff\xfe"}},
		{"a=%", map[string]string{"a": "%"}},
		{"a=%4", map[string]string{"a": "%4"}},
		{"a=%4g%g4", map[string]string{"a": "%4g%g4"}},
		{"a=%%41", map[string]string{"a": "%A"}},
		{"=v", map[string]string{"": "v"}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			if got := parseQuery(tt.raw); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseQuery(%q) = %q, want %q", tt.raw, got, tt.want)
			}
		})
	}
}
