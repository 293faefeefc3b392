package resource

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want      URI
		canonical string // String(); "" means same as in
		path      string
		httpPath  string
	}{
		// docs/RESOURCE_URI.md examples.
		{
			in:       "kbs://example.cckbs.org:8081/alice/decryption-key/1",
			want:     URI{Plugin: "resource", Host: "example.cckbs.org:8081", Segments: []string{"alice", "decryption-key", "1"}},
			path:     "alice/decryption-key/1",
			httpPath: "/kbs/v0/resource/alice/decryption-key/1",
		},
		{
			in:       "kbs:///a/b/c",
			want:     URI{Plugin: "resource", Segments: []string{"a", "b", "c"}},
			path:     "a/b/c",
			httpPath: "/kbs/v0/resource/a/b/c",
		},
		{
			in:       "kbs+pkcs11:///a/b/c",
			want:     URI{Plugin: "pkcs11", Segments: []string{"a", "b", "c"}},
			path:     "a/b/c",
			httpPath: "/kbs/v0/pkcs11/a/b/c",
		},
		{
			in:       "kbs:///repo/type/tag?param1=value1&param2=value2",
			want:     URI{Plugin: "resource", Segments: []string{"repo", "type", "tag"}, Query: "param1=value1&param2=value2"},
			path:     "repo/type/tag",
			httpPath: "/kbs/v0/resource/repo/type/tag?param1=value1&param2=value2",
		},
		// The doc's nested example, kbs:///repo/nested/type/tag/extra, is
		// rejected for the resource plugin (see TestParseInvalid); with
		// another plugin any number of segments is fine.
		{
			in:       "kbs+pkcs11:///repo/nested/type/tag/extra",
			want:     URI{Plugin: "pkcs11", Segments: []string{"repo", "nested", "type", "tag", "extra"}},
			path:     "repo/nested/type/tag/extra",
			httpPath: "/kbs/v0/pkcs11/repo/nested/type/tag/extra",
		},
		// deps/resource_uri unit-test cases.
		{
			in:       "kbs:///alice/cosign-key/213",
			want:     URI{Plugin: "resource", Segments: []string{"alice", "cosign-key", "213"}},
			path:     "alice/cosign-key/213",
			httpPath: "/kbs/v0/resource/alice/cosign-key/213",
		},
		{
			in:       "kbs+myplugin:///a/b/c",
			want:     URI{Plugin: "myplugin", Segments: []string{"a", "b", "c"}},
			path:     "a/b/c",
			httpPath: "/kbs/v0/myplugin/a/b/c",
		},
		{
			in:       "kbs+custom://example.com:8080/repo/type/tag",
			want:     URI{Plugin: "custom", Host: "example.com:8080", Segments: []string{"repo", "type", "tag"}},
			path:     "repo/type/tag",
			httpPath: "/kbs/v0/custom/repo/type/tag",
		},
		{
			in:        "kbs+resource:///repo/type/tag",
			want:      URI{Plugin: "resource", Segments: []string{"repo", "type", "tag"}},
			canonical: "kbs:///repo/type/tag",
			path:      "repo/type/tag",
			httpPath:  "/kbs/v0/resource/repo/type/tag",
		},
		// Others.
		{
			in:       "kbs:///default/cosign-public-key/test",
			want:     URI{Plugin: "resource", Segments: []string{"default", "cosign-public-key", "test"}},
			path:     "default/cosign-public-key/test",
			httpPath: "/kbs/v0/resource/default/cosign-public-key/test",
		},
		{
			in:       "kbs://[::1]:8080/_a/-b/c.tar.gz",
			want:     URI{Plugin: "resource", Host: "[::1]:8080", Segments: []string{"_a", "-b", "c.tar.gz"}},
			path:     "_a/-b/c.tar.gz",
			httpPath: "/kbs/v0/resource/_a/-b/c.tar.gz",
		},
		{
			in:       "kbs://10.0.0.1/r/t/g",
			want:     URI{Plugin: "resource", Host: "10.0.0.1", Segments: []string{"r", "t", "g"}},
			path:     "r/t/g",
			httpPath: "/kbs/v0/resource/r/t/g",
		},
		{
			in:       "kbs+sample:///x",
			want:     URI{Plugin: "sample", Segments: []string{"x"}},
			path:     "x",
			httpPath: "/kbs/v0/sample/x",
		},
		{
			in:       "kbs+nebula-ca:///credential?name=n&ip=10.0.0.2%2F24",
			want:     URI{Plugin: "nebula-ca", Segments: []string{"credential"}, Query: "name=n&ip=10.0.0.2%2F24"},
			path:     "credential",
			httpPath: "/kbs/v0/nebula-ca/credential?name=n&ip=10.0.0.2%2F24",
		},
		{
			// An empty query is dropped.
			in:        "kbs:///a/b/c?",
			want:      URI{Plugin: "resource", Segments: []string{"a", "b", "c"}},
			canonical: "kbs:///a/b/c",
			path:      "a/b/c",
			httpPath:  "/kbs/v0/resource/a/b/c",
		},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse = %#v, want %#v", got, tc.want)
			}
			canonical := tc.canonical
			if canonical == "" {
				canonical = tc.in
			}
			if s := got.String(); s != canonical {
				t.Errorf("String() = %q, want %q", s, canonical)
			}
			if p := got.Path(); p != tc.path {
				t.Errorf("Path() = %q, want %q", p, tc.path)
			}
			if p := got.HTTPPath(); p != tc.httpPath {
				t.Errorf("HTTPPath() = %q, want %q", p, tc.httpPath)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			again, err := Parse(got.String())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Errorf("Parse(String()) = %#v, %v; want %#v", again, err, got)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		rule string // substring of the error
	}{
		{"", `missing "://"`},
		{"http:///repo/type/tag", `not "kbs" or "kbs+<plugin>"`},
		{"KBS:///a/b/c", `not "kbs"`},
		{"kbss:///a/b/c", `not "kbs"`},
		{" kbs:///a/b/c", `not "kbs"`},
		{"kbs+:///repo/type/tag", "empty plugin name"},
		{"kbs+.x:///a", "plugin name"},
		{"kbs+pk cs:///a", "plugin name"},
		{"kbs+pk/cs:///a", "plugin name"},
		{"kbs:/a/b/c", `missing "://"`},
		{"kbs:a/b/c", `missing "://"`},
		{"kbs://host", "missing path"},
		{"kbs://", "missing path"},
		{"kbs:///", `path segment 1 ""`},
		{"kbs:///repo/nested/type/tag/extra", "exactly 3 path segments"},
		{"kbs:///a/b", "exactly 3 path segments"},
		{"kbs:///a/b/c/d", "exactly 3 path segments"},
		{"kbs:///a/b/c/", `path segment 4 ""`},
		{"kbs:////a/b/c", `path segment 1 ""`},
		{"kbs:///a//c", `path segment 2 ""`},
		{"kbs:///a/../c", `path segment 2 ".."`},
		{"kbs:///a/./c", `path segment 2 "."`},
		{"kbs:///a/.hidden/c", `path segment 2 ".hidden"`},
		{"kbs:///a/b%2Fc/d", `path segment 2 "b%2Fc"`},
		{"kbs:///a/%2e%2e/c", `path segment 2`},
		{"kbs:///a/b/c\n", `path segment 3`},
		{"kbs:///a/b/t\u00fcr", `path segment 3`},
		{"kbs:///a/b/c d", `path segment 3`},
		{"kbs+pkcs11:///", `path segment 1 ""`},
		{"kbs:///a/b/c#frag", "fragments are not allowed"},
		{"kbs:///a/b/c?x#frag", "fragments are not allowed"},
		{"kbs://user@host/a/b/c", "userinfo"},
		{"kbs://user:pw@host/a/b/c", "userinfo"},
		{"kbs://host:/a/b/c", "empty port"},
		{"kbs://:80/a/b/c", "no host name"},
		{"kbs://host:65536/a/b/c", "port"},
		{"kbs://host:8o/a/b/c", "port"},
		{"kbs://host:+80/a/b/c", "port"},
		{"kbs://host:1:2/a/b/c", "port"},
		{"kbs://ho%73t/a/b/c", "character outside"},
		{"kbs://ho\\st/a/b/c", "character outside"},
		{"kbs://[::1/a/b/c", "unclosed"},
		{"kbs://[1.2.3.4]/a/b/c", "IPv6"},
		{"kbs://[fe80::1%25eth0]/a/b/c", "IPv6"},
		{"kbs://[::1]x/a/b/c", "after ']'"},
		{"kbs://[::1]:/a/b/c", "empty port"},
		{"kbs:///a/b/c?x y", "query"},
		{"kbs:///a/b/c?x=%zz", "query"},
		{"kbs:///a/b/c?x=%4", "query"},
		{"kbs:///a/b/c?x=\"", "query"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := Parse(tc.in)
			if err == nil {
				t.Fatalf("Parse = %#v, want error", u)
			}
			var e *Error
			if !errors.As(err, &e) || e.URI != tc.in {
				t.Fatalf("error %v is not an *Error naming the input", err)
			}
			if !strings.Contains(err.Error(), tc.rule) {
				t.Errorf("error %q does not mention %q", err, tc.rule)
			}
			if !reflect.DeepEqual(u, URI{}) {
				t.Errorf("Parse returned %#v with the error, want the zero URI", u)
			}
		})
	}
}

func TestFromPath(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    string // String() of the result; "" for an error
		wantErr string
	}{
		{in: "default/key/1", want: "kbs:///default/key/1"},
		{in: "/default/key/1", want: "kbs:///default/key/1"},
		{in: "default/security-policy/test", want: "kbs:///default/security-policy/test"},
		{in: "default/key", wantErr: "exactly 3"},
		{in: "default/key/1/2", wantErr: "exactly 3"},
		{in: "//default/key/1", wantErr: `segment 1 ""`},
		{in: "default/../1", wantErr: `segment 2 ".."`},
		{in: "", wantErr: `segment 1 ""`},
		{in: "kbs:///a/b/c", wantErr: `segment 1 "kbs:"`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := FromPath(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("FromPath = %v, %v; want error containing %q", u, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("FromPath: %v", err)
			}
			if u.String() != tc.want || u.Plugin != DefaultPlugin {
				t.Fatalf("FromPath = %#v (%s), want %s", u, u, tc.want)
			}
		})
	}
}

func TestValidateHandBuilt(t *testing.T) {
	for _, tc := range []struct {
		name    string
		u       URI
		wantErr string
	}{
		{"ok", URI{Plugin: "resource", Segments: []string{"a", "b", "c"}}, ""},
		{"zero", URI{}, "plugin name"},
		{"no segments", URI{Plugin: "pkcs11"}, "missing path"},
		{"host with slash", URI{Plugin: "resource", Host: "a/b", Segments: []string{"a", "b", "c"}}, "host"},
		{"query with hash", URI{Plugin: "resource", Segments: []string{"a", "b", "c"}, Query: "a#b"}, "query"},
		{"segment with slash", URI{Plugin: "pkcs11", Segments: []string{"a/b"}}, "segment 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.u.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestText(t *testing.T) {
	type doc struct {
		URI URI `json:"resource_uri"`
	}
	var d doc
	if err := json.Unmarshal([]byte(`{"resource_uri":"kbs+resource://kbs.local:8080/default/key/1"}`), &d); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	want := URI{Plugin: "resource", Host: "kbs.local:8080", Segments: []string{"default", "key", "1"}}
	if !reflect.DeepEqual(d.URI, want) {
		t.Fatalf("unmarshal = %#v, want %#v", d.URI, want)
	}
	out, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if string(out) != `{"resource_uri":"kbs://kbs.local:8080/default/key/1"}` {
		t.Fatalf("marshal = %s", out)
	}
	if err := json.Unmarshal([]byte(`{"resource_uri":"kbs:///a/../c"}`), &d); err == nil {
		t.Fatal("unmarshal of an invalid URI succeeded")
	}
	if _, err := json.Marshal(doc{}); err == nil {
		t.Fatal("marshal of the zero URI succeeded")
	}
}

// FuzzParse checks that Parse never panics and that whatever it accepts has
// a canonical form that parses back to the same URI.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"kbs:///a/b/c",
		"kbs://example.cckbs.org:8081/alice/decryption-key/1",
		"kbs+pkcs11:///repo/nested/type/tag/extra",
		"kbs:///repo/type/tag?param1=value1&param2=value2",
		"kbs+resource://[::1]:80/a/b/c?",
		"kbs:///a/../c",
		"kbs://u@h/a/b/c#f",
		"kbs:///a/b%2Fc/d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			return
		}
		c := u.String()
		v, err := Parse(c)
		if err != nil {
			t.Fatalf("Parse(%q) ok but its String() %q does not parse: %v", s, c, err)
		}
		if !reflect.DeepEqual(u, v) {
			t.Fatalf("Parse(%q) = %#v, but Parse(String()) = %#v", s, u, v)
		}
		if v.String() != c {
			t.Fatalf("String() not stable: %q then %q", c, v.String())
		}
		if err := u.Validate(); err != nil {
			t.Fatalf("Parse(%q) ok but Validate: %v", s, err)
		}
		if !strings.HasPrefix(u.HTTPPath(), "/kbs/v0/"+u.Plugin+"/"+u.Path()) {
			t.Fatalf("HTTPPath() = %q", u.HTTPPath())
		}
		for _, seg := range u.Segments {
			if seg == "" || seg == "." || seg == ".." || strings.ContainsAny(seg, "/%") {
				t.Fatalf("Parse(%q) accepted segment %q", s, seg)
			}
		}
	})
}
