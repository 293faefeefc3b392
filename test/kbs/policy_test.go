package kbs

import (
	"encoding/base64"
	"os"
	"strings"
	"testing"
)

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestPolicyAllow(t *testing.T) {
	type check struct {
		in   PolicyInput
		want bool
	}
	sample := func(res string) PolicyInput { return PolicyInput{Tee: "sample", Resource: res} }
	tests := []struct {
		file   string
		checks []check
	}{
		{"testdata/policy/sample-default.json", []check{
			{sample("default/key/k1"), true},
			{sample("default/a/b"), true},
			{sample("other/key/k1"), false},
			{sample("default/key/k1/extra"), false}, // "*" does not cross "/"
			{PolicyInput{Tee: "tdx", Resource: "default/key/k1"}, false},
			{PolicyInput{Tee: "", Resource: "default/key/k1"}, false},
		}},
		{"testdata/policy/ordered.json", []check{
			{PolicyInput{Tee: "tdx", Resource: "prod/secret/x", Query: map[string]string{"version": "v1"}}, false}, // first rule wins
			{PolicyInput{Tee: "tdx", Resource: "prod/key/x", Query: map[string]string{"version": "v1"}}, true},
			{PolicyInput{Tee: "tdx", Resource: "prod/key/x", Query: map[string]string{"version": "v3"}}, false},
			{PolicyInput{Tee: "tdx", Resource: "prod/key/x"}, false}, // query parameter required
			{PolicyInput{Tee: "snp", Resource: "prod/key/x", Query: map[string]string{"version": "v1"}}, false},
			{PolicyInput{Tee: "snp", Resource: "dev/key/x"}, true}, // default allow
		}},
		{"testdata/policy/allow-all.json", []check{{sample("a/b/c"), true}, {PolicyInput{}, true}}},
		{"testdata/policy/empty.json", []check{{sample("default/key/k1"), false}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			p, err := ParsePolicy(readFile(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.checks {
				if got := p.Allow(c.in); got != c.want {
					t.Errorf("Allow(%+v) = %v, want %v", c.in, got, c.want)
				}
			}
			// MarshalJSON writes what ParsePolicy reads back to the same policy.
			b, err := p.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			q, err := ParsePolicy(b)
			if err != nil {
				t.Fatalf("re-parse %s: %v", b, err)
			}
			for _, c := range tt.checks {
				if got := q.Allow(c.in); got != c.want {
					t.Errorf("round-tripped Allow(%+v) = %v, want %v", c.in, got, c.want)
				}
			}
		})
	}
	if AllowAll().Allow(PolicyInput{}) != true || DenyAll().Allow(PolicyInput{Tee: "sample"}) != false {
		t.Error("AllowAll/DenyAll")
	}
	var nilPolicy *Policy
	if nilPolicy.Allow(PolicyInput{}) {
		t.Error("nil policy allowed")
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct{ doc, err string }{
		{`{"default":"maybe"}`, `default "maybe"`},
		{`{"rules":[{"tee":"sample"}]}`, `rule 0 has no "allow"`},
		{`{"rules":[{"tee":"[","allow":true}]}`, "syntax error in pattern"},
		{`{"rules":[{"resource":"a/[/b","allow":true}]}`, "syntax error in pattern"},
		{`{"rules":[{"query":{"v":"["},"allow":true}]}`, "syntax error in pattern"},
		{`{"rules":[{"plugin":"resource","allow":true}]}`, `unknown field "plugin"`},
		{`{"default":"allow","extra":1}`, `unknown field "extra"`},
		{`{"rules":[{"allow":"yes"}]}`, "cannot unmarshal"},
		{`{"default":"allow"} {}`, "trailing data"},
		{``, "EOF"},
		{`[]`, "cannot unmarshal"},
	}
	for _, tt := range tests {
		t.Run(tt.doc, func(t *testing.T) {
			_, err := ParsePolicy([]byte(tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParsePolicy(%s) = %v, want error containing %q", tt.doc, err, tt.err)
			}
		})
	}
}

func TestNewPolicyCopiesRules(t *testing.T) {
	q := map[string]string{"v": "1"}
	rules := []Rule{{Query: q, Allow: true}}
	p, err := NewPolicy(false, rules...)
	if err != nil {
		t.Fatal(err)
	}
	q["v"] = "2"
	rules[0].Allow = false
	if !p.Allow(PolicyInput{Query: map[string]string{"v": "1"}}) {
		t.Error("policy changed when the caller's rules changed")
	}
}
