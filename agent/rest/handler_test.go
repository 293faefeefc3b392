package rest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestNew(t *testing.T) {
	f := newFake()
	tests := []struct {
		name     string
		features string
		aa       Attestation
		res      Resources
		wantErr  bool
	}{
		{"default is resource", "", nil, f, false},
		{"resource", "resource", nil, f, false},
		{"attestation", "attestation", f, nil, false},
		{"all", "all", f, f, false},
		{"unknown", "everything", f, f, true},
		{"case matters", "All", f, f, true},
		{"resource without provider", "resource", f, nil, true},
		{"attestation without agent", "attestation", nil, f, true},
		{"all without agent", "all", nil, f, true},
		{"all without provider", "all", f, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := New(Config{Features: tt.features}, tt.aa, tt.res, nil)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New: err = %v, want error %v", err, tt.wantErr)
			}
			if err == nil && h == nil {
				t.Fatal("New returned a nil handler")
			}
		})
	}
}

// TestFeatures checks every route under every feature setting: routes of a
// disabled feature answer 404 and never reach the backend.
func TestFeatures(t *testing.T) {
	type route struct {
		method, target, body string
		needs                string // "attestation", "resource" or "" (always on)
		call                 string // the fake method a served request reaches
	}
	routes := []route{
		{"GET", "/cdh/resource/default/key/1", "", "resource", "GetResource"},
		{"GET", "/aa/evidence?runtime_data=abc", "", "attestation", "Evidence"},
		{"GET", "/aa/additional-evidence?runtime_data=abc", "", "attestation", "AdditionalEvidence"},
		{"GET", "/aa/token?token_type=kbs", "", "attestation", "Token"},
		{"POST", "/aa/aael", `{"domain":"d","operation":"o","content":"c"}`, "attestation", "Extend"},
		{"GET", "/info", "", "", ""},
	}
	features := map[string]map[string]bool{
		"":            {"resource": true},
		"resource":    {"resource": true},
		"attestation": {"attestation": true},
		"all":         {"resource": true, "attestation": true},
	}
	for feat, on := range features {
		for _, rt := range routes {
			t.Run(fmt.Sprintf("%s/%s %s", feat, rt.method, rt.target), func(t *testing.T) {
				f := newFake()
				h, _ := newHandler(t, feat, f)
				w := do(h, rt.method, rt.target, rt.body, "")
				enabled := rt.needs == "" || on[rt.needs]
				want := http.StatusOK
				if !enabled {
					want = http.StatusNotFound
				}
				if w.Code != want {
					t.Fatalf("status = %d, want %d (body %q)", w.Code, want, w.Body)
				}
				calls := f.recorded()
				switch {
				case !enabled && len(calls) != 0:
					t.Errorf("disabled route reached the backend: %+v", calls)
				case !enabled && !strings.Contains(w.Body.String(), rt.needs+" feature is not enabled"):
					t.Errorf("404 body %q does not name the disabled feature", w.Body)
				case enabled && rt.call != "" && (len(calls) != 1 || calls[0].method != rt.call):
					t.Errorf("calls = %+v, want one %s", calls, rt.call)
				}
			})
		}
	}
}

func TestStatusCodes(t *testing.T) {
	failing := errors.New("backend exploded")
	tests := []struct {
		name       string
		features   string
		method     string
		target     string
		body       string
		remote     string
		err        error
		wantCode   int
		wantAllow  string
		wantBody   string // substring
		wantCalled bool
	}{
		// 200s
		{name: "resource", method: "GET", target: "/cdh/resource/default/key/1", wantCode: 200, wantCalled: true},
		{name: "evidence", features: "all", method: "GET", target: "/aa/evidence?runtime_data=x", wantCode: 200, wantCalled: true},
		{name: "info", method: "GET", target: "/info", wantCode: 200},
		{name: "resource ignores query", method: "GET", target: "/cdh/resource/a/b/c?x=1", wantCode: 200, wantCalled: true},
		{name: "evidence empty runtime_data", features: "all", method: "GET", target: "/aa/evidence?runtime_data=", wantCode: 200, wantCalled: true},

		// 400 missing or bad parameter
		{name: "evidence without runtime_data", features: "all", method: "GET", target: "/aa/evidence", wantCode: 400, wantBody: "runtime_data"},
		{name: "evidence other parameter only", features: "all", method: "GET", target: "/aa/evidence?runtime=x", wantCode: 400},
		{name: "additional without runtime_data", features: "all", method: "GET", target: "/aa/additional-evidence?encoding=base64", wantCode: 400},
		{name: "token without token_type", features: "all", method: "GET", target: "/aa/token", wantCode: 400, wantBody: "token_type"},
		{name: "token with empty token_type", features: "all", method: "GET", target: "/aa/token?token_type=", wantCode: 400},
		{name: "evidence bad base64", features: "all", method: "GET", target: "/aa/evidence?runtime_data=!!!&encoding=base64", wantCode: 400},
		{name: "evidence unknown encoding", features: "all", method: "GET", target: "/aa/evidence?runtime_data=00&encoding=hex", wantCode: 400, wantBody: "hex"},
		{name: "resource segment starts with dot", method: "GET", target: "/cdh/resource/default/key/.hidden", wantCode: 400},
		{name: "resource dot-dot segment", method: "GET", target: "/cdh/resource/default/../1", wantCode: 400},
		{name: "resource escaped dot-dot", method: "GET", target: "/cdh/resource/default/%2e%2e/1", wantCode: 400},
		{name: "resource empty segment", method: "GET", target: "/cdh/resource/default//1", wantCode: 400},
		{name: "resource bad character", method: "GET", target: "/cdh/resource/default/key/a:b", wantCode: 400},
		{name: "resource escaped slash", method: "GET", target: "/cdh/resource/default/key/a%2Fb", wantCode: 400},
		{name: "aael not json", features: "all", method: "POST", target: "/aa/aael", body: "domain=d", wantCode: 400},
		{name: "aael missing content", features: "all", method: "POST", target: "/aa/aael", body: `{"domain":"d","operation":"o"}`, wantCode: 400, wantBody: "content"},
		{name: "aael number field", features: "all", method: "POST", target: "/aa/aael", body: `{"domain":"d","operation":"o","content":1}`, wantCode: 400},
		{name: "aael null field", features: "all", method: "POST", target: "/aa/aael", body: `{"domain":"d","operation":null,"content":"c"}`, wantCode: 400},
		{name: "aael keys are case-sensitive", features: "all", method: "POST", target: "/aa/aael", body: `{"Domain":"d","operation":"o","content":"c"}`, wantCode: 400},
		{name: "aael trailing data", features: "all", method: "POST", target: "/aa/aael", body: `{"domain":"d","operation":"o","content":"c"} x`, wantCode: 400},
		{name: "aael array", features: "all", method: "POST", target: "/aa/aael", body: `[]`, wantCode: 400},
		{name: "aael empty body", features: "all", method: "POST", target: "/aa/aael", wantCode: 400},
		{name: "aael invalid utf-8", features: "all", method: "POST", target: "/aa/aael", body: "{\"domain\":\"\xff\",\"operation\":\"o\",\"content\":\"c\"}", wantCode: 400},

		// 403 non-loopback peers, before routing
		{name: "remote info", method: "GET", target: "/info", remote: "10.1.2.3:1234", wantCode: 403},
		{name: "remote resource", method: "GET", target: "/cdh/resource/default/key/1", remote: "10.1.2.3:1234", wantCode: 403},
		{name: "remote token", features: "all", method: "GET", target: "/aa/token?token_type=kbs", remote: "192.168.0.1:80", wantCode: 403},
		{name: "remote unknown path", method: "GET", target: "/nope", remote: "10.1.2.3:1234", wantCode: 403},
		{name: "remote wrong method", method: "DELETE", target: "/info", remote: "10.1.2.3:1234", wantCode: 403},
		{name: "remote ipv6", method: "GET", target: "/info", remote: "[2001:db8::1]:1234", wantCode: 403},
		{name: "remote link-local", method: "GET", target: "/info", remote: "[fe80::1%eth0]:1234", wantCode: 403},
		{name: "remote ::2", method: "GET", target: "/info", remote: "[::2]:1234", wantCode: 403},
		{name: "remote unspecified", method: "GET", target: "/info", remote: "0.0.0.0:1234", wantCode: 403},
		{name: "remote mapped non-loopback", method: "GET", target: "/info", remote: "[::ffff:10.0.0.1]:1234", wantCode: 403},
		{name: "peer without port", method: "GET", target: "/info", remote: "127.0.0.1", wantCode: 403},
		{name: "unix socket peer", method: "GET", target: "/info", remote: "@", wantCode: 403},
		{name: "loopback 127/8", method: "GET", target: "/info", remote: "127.9.8.7:1", wantCode: 200},
		{name: "loopback ::1", method: "GET", target: "/info", remote: "[::1]:1", wantCode: 200},
		{name: "loopback mapped", method: "GET", target: "/info", remote: "[::ffff:127.0.0.1]:1", wantCode: 200},

		// 404 unknown path
		{name: "root", method: "GET", target: "/", wantCode: 404},
		{name: "unknown", method: "GET", target: "/unknown", wantCode: 404},
		{name: "info trailing slash", method: "GET", target: "/info/", wantCode: 404},
		{name: "aa root", features: "all", method: "GET", target: "/aa", wantCode: 404},
		{name: "aa unknown", features: "all", method: "GET", target: "/aa/unknown", wantCode: 404},
		{name: "aa token trailing slash", features: "all", method: "GET", target: "/aa/token/?token_type=kbs", wantCode: 404},
		{name: "aa escaped route", features: "all", method: "GET", target: "/aa/tok%65n?token_type=kbs", wantCode: 404},
		{name: "cdh unknown api", method: "GET", target: "/cdh/secret/a/b/c", wantCode: 404},
		{name: "resource no path", method: "GET", target: "/cdh/resource", wantCode: 404},
		{name: "resource two segments", method: "GET", target: "/cdh/resource/default/key", wantCode: 404},
		{name: "resource four segments", method: "GET", target: "/cdh/resource/default/key/1/2", wantCode: 404},
		{name: "resource trailing slash", method: "GET", target: "/cdh/resource/default/key/1/", wantCode: 404},

		// 405 wrong method on a known path
		{name: "post info", method: "POST", target: "/info", wantCode: 405, wantAllow: "GET"},
		{name: "head info", method: "HEAD", target: "/info", wantCode: 405, wantAllow: "GET"},
		{name: "post resource", method: "POST", target: "/cdh/resource/default/key/1", wantCode: 405, wantAllow: "GET"},
		{name: "put evidence", features: "all", method: "PUT", target: "/aa/evidence?runtime_data=x", wantCode: 405, wantAllow: "GET"},
		{name: "post additional", features: "all", method: "POST", target: "/aa/additional-evidence?runtime_data=x", wantCode: 405, wantAllow: "GET"},
		{name: "delete token", features: "all", method: "DELETE", target: "/aa/token?token_type=kbs", wantCode: 405, wantAllow: "GET"},
		{name: "get aael", features: "all", method: "GET", target: "/aa/aael", wantCode: 405, wantAllow: "POST"},

		// 413
		{name: "aael oversized", features: "all", method: "POST", target: "/aa/aael",
			body: `{"domain":"d","operation":"o","content":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, wantCode: 413},

		// 500 with the error text
		{name: "resource fails", method: "GET", target: "/cdh/resource/default/key/1", err: failing, wantCode: 500, wantBody: "backend exploded", wantCalled: true},
		{name: "evidence fails", features: "all", method: "GET", target: "/aa/evidence?runtime_data=x", err: failing, wantCode: 500, wantBody: "backend exploded", wantCalled: true},
		{name: "additional fails", features: "all", method: "GET", target: "/aa/additional-evidence?runtime_data=x", err: failing, wantCode: 500, wantBody: "backend exploded", wantCalled: true},
		{name: "token fails", features: "all", method: "GET", target: "/aa/token?token_type=kbs", err: failing, wantCode: 500, wantBody: "backend exploded", wantCalled: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.err = tt.err
			h, _ := newHandler(t, tt.features, f)
			w := do(h, tt.method, tt.target, tt.body, tt.remote)
			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.wantCode, w.Body)
			}
			if got := w.Header().Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tt.wantAllow)
			}
			if !strings.Contains(w.Body.String(), tt.wantBody) {
				t.Errorf("body %q does not contain %q", w.Body, tt.wantBody)
			}
			if w.Code >= 400 && !strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
				t.Errorf("error Content-Type = %q", w.Header().Get("Content-Type"))
			}
			if called := len(f.recorded()) > 0; called != tt.wantCalled {
				t.Errorf("backend called = %v, want %v: %+v", called, tt.wantCalled, f.recorded())
			}
		})
	}
}

func TestResource(t *testing.T) {
	tests := []struct {
		path    string
		wantURI string
	}{
		{"default/key/1", "kbs:///default/key/1"},
		{"my-repo/cosign-public-key/test", "kbs:///my-repo/cosign-public-key/test"},
		{"_r/t.y.p.e/tag-1_0.x", "kbs:///_r/t.y.p.e/tag-1_0.x"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			f := newFake()
			f.resource = []byte{0, 1, 2, 0xff, '\n', 0xfe}
			h, _ := newHandler(t, "resource", f)
			w := do(h, "GET", "/cdh/resource/"+tt.path, "", "")
			if w.Code != 200 {
				t.Fatalf("status = %d: %q", w.Code, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("Content-Type = %q", ct)
			}
			if !bytes.Equal(w.Body.Bytes(), f.resource) {
				t.Errorf("body = %x, want %x", w.Body.Bytes(), f.resource)
			}
			calls := f.recorded()
			if len(calls) != 1 || calls[0].arg != tt.wantURI {
				t.Errorf("calls = %+v, want GetResource(%q)", calls, tt.wantURI)
			}
		})
	}
}

// TestRuntimeData checks that runtime_data reaches the agent byte for byte,
// raw or base64, for both evidence routes.
func TestRuntimeData(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	tests := []struct {
		name  string
		query string // raw query after '?'
		want  []byte
	}{
		{"plain", "runtime_data=xxxx", []byte("xxxx")},
		{"empty", "runtime_data=", []byte{}},
		{"no equals sign", "runtime_data", []byte{}},
		{"plus is space", "runtime_data=a+b", []byte("a b")},
		{"percent escapes", "runtime_data=%00%FF%2B%26%3D", []byte{0, 0xff, '+', '&', '='}},
		{"malformed escape kept", "runtime_data=100%25%zz%4", []byte("100%%zz%4")},
		{"semicolon is data", "runtime_data=a;b", []byte("a;b")},
		{"every byte escaped", "runtime_data=" + url.QueryEscape(string(all)), all},
		{"later duplicate wins", "runtime_data=first&runtime_data=second", []byte("second")},
		{"other params ignored", "x=1&runtime_data=abc&y=2", []byte("abc")},
		{"base64 url-safe", "runtime_data=" + base64.RawURLEncoding.EncodeToString(all) + "&encoding=base64", all},
		{"base64 README example", "runtime_data=eHh4eA&encoding=base64", []byte("xxxx")},
		{"base64 alphabet - and _", "runtime_data=-_-_&encoding=base64", []byte{0xfb, 0xff, 0xbf}},
		{"base64 empty", "runtime_data=&encoding=base64", []byte{}},
		{"encoding before data", "encoding=base64&runtime_data=cmVwb3J0", []byte("report")},
	}
	for _, route := range []string{"/aa/evidence", "/aa/additional-evidence"} {
		for _, tt := range tests {
			t.Run(route+"/"+tt.name, func(t *testing.T) {
				f := newFake()
				h, _ := newHandler(t, "attestation", f)
				w := do(h, "GET", route+"?"+tt.query, "", "")
				if w.Code != 200 {
					t.Fatalf("status = %d: %q", w.Code, w.Body)
				}
				calls := f.recorded()
				if len(calls) != 1 {
					t.Fatalf("calls = %+v", calls)
				}
				if !bytes.Equal(calls[0].data, tt.want) {
					t.Errorf("runtime data = %x, want %x", calls[0].data, tt.want)
				}
				want := f.evidence
				if route == "/aa/additional-evidence" {
					want = f.additional
				}
				if !bytes.Equal(w.Body.Bytes(), want) {
					t.Errorf("body = %q, want %q", w.Body, want)
				}
				if ct := w.Header().Get("Content-Type"); ct != "application/octet-stream" {
					t.Errorf("Content-Type = %q", ct)
				}
			})
		}
	}
}

func TestRuntimeDataBadBase64(t *testing.T) {
	tests := []struct{ name, query string }{
		{"padded", "runtime_data=eHh4eA%3D%3D&encoding=base64"},
		{"standard alphabet +", "runtime_data=%2B%2F%2B%2F&encoding=base64"},
		{"invalid characters", "runtime_data=!!!!&encoding=base64"},
		{"impossible length", "runtime_data=eHh4e&encoding=base64"},
		{"non-zero trailing bits", "runtime_data=eHh4eB&encoding=base64"},
		{"embedded newline", "runtime_data=eHh4%0AeA&encoding=base64"},
		{"embedded space", "runtime_data=eHh4+eA&encoding=base64"},
		{"empty encoding", "runtime_data=eHh4eA&encoding="},
		{"uppercase encoding", "runtime_data=eHh4eA&encoding=BASE64"},
		{"base64url name", "runtime_data=eHh4eA&encoding=base64url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			h, _ := newHandler(t, "attestation", f)
			w := do(h, "GET", "/aa/evidence?"+tt.query, "", "")
			if w.Code != 400 {
				t.Fatalf("status = %d, want 400 (body %q)", w.Code, w.Body)
			}
			if calls := f.recorded(); len(calls) != 0 {
				t.Errorf("agent called with bad input: %+v", calls)
			}
		})
	}
}

func TestToken(t *testing.T) {
	const jwt = "eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjF9.c2ln"
	const pem = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
	upstream, _ := json.Marshal(map[string]string{"token": jwt, "tee_keypair": pem})
	tests := []struct {
		name     string
		reply    []byte
		wantCode int
	}{
		{"upstream kbs reply with tee_keypair", upstream, 200},
		{"object with extra fields", []byte(`{"tee_keypair":{"kty":"EC","d":"secret"},"token":"` + jwt + `","x":1}`), 200},
		{"raw jwt", []byte(jwt), 200},
		{"raw jwt with newline", []byte(jwt + "\n"), 200},
		{"json string", []byte(`"` + jwt + `"`), 200},
		{"object without token", []byte(`{"tee_keypair":"` + strings.ReplaceAll(pem, "\n", `\n`) + `"}`), 500},
		{"token not a string", []byte(`{"token":{"jwt":"` + jwt + `","d":"secret"}}`), 500},
		{"null token", []byte(`{"token":null}`), 500},
		{"broken object", []byte(`{"token":"` + jwt), 500},
		{"empty reply", nil, 500},
		{"empty token", []byte(`{"token":""}`), 500},
		{"token is a private key", []byte(pem), 500},
		{"non-utf8", []byte{0xff, 0xfe}, 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.token = tt.reply
			h, logs := newHandler(t, "attestation", f)
			w := do(h, "GET", "/aa/token?token_type=kbs", "", "")
			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.wantCode, w.Body)
			}
			body := w.Body.String()
			for _, secret := range []string{"PRIVATE KEY", "tee_keypair", "MIGHAgEA", "secret"} {
				if strings.Contains(body, secret) {
					t.Errorf("body leaks %q: %q", secret, body)
				}
				if strings.Contains(logs.String(), secret) {
					t.Errorf("log leaks %q: %q", secret, logs)
				}
			}
			if strings.Contains(logs.String(), jwt) {
				t.Errorf("log leaks the token: %q", logs)
			}
			if calls := f.recorded(); len(calls) != 1 || calls[0].arg != "kbs" {
				t.Errorf("calls = %+v, want Token(kbs)", calls)
			}
			if tt.wantCode != 200 {
				return
			}
			if want := `{"token":"` + jwt + `"}`; body != want {
				t.Errorf("body = %q, want exactly %q", body, want)
			}
			var obj map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &obj); err != nil || len(obj) != 1 || obj["token"] != jwt {
				t.Errorf("body %q is not {token} alone (err %v)", body, err)
			}
		})
	}
}

func TestTokenTypePassedThrough(t *testing.T) {
	tests := []struct{ query, want string }{
		{"token_type=kbs", "kbs"},
		{"token_type=coco_as", "coco_as"},
		{"token_type=a%20b+c", "a b c"},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			f := newFake()
			h, _ := newHandler(t, "all", f)
			if w := do(h, "GET", "/aa/token?"+tt.query, "", ""); w.Code != 200 {
				t.Fatalf("status = %d: %q", w.Code, w.Body)
			}
			if calls := f.recorded(); len(calls) != 1 || calls[0].arg != tt.want {
				t.Errorf("calls = %+v, want Token(%q)", calls, tt.want)
			}
		})
	}
}

func TestAAEL(t *testing.T) {
	other := errors.New("event log file is read-only")
	tests := []struct {
		name     string
		err      error
		wantCode int
		want     map[string]string // response JSON when 200
		wantText string            // body substring when 500
	}{
		{"ok", nil, 200, map[string]string{"success": "true"}, ""},
		{"not supported", ErrMeasurementNotSupported, 200,
			map[string]string{"success": "false", "message": "the platform does not support runtime measurement"}, ""},
		{"not enabled", ErrMeasurementNotEnabled, 200,
			map[string]string{"success": "false", "message": "the attestation agent's event log is not enabled"}, ""},
		{"wrapped not enabled", fmt.Errorf("aa: extend: %w", ErrMeasurementNotEnabled), 200,
			map[string]string{"success": "false", "message": "the attestation agent's event log is not enabled"}, ""},
		{"other error", other, 500, nil, "event log file is read-only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.extendErr = tt.err
			h, _ := newHandler(t, "attestation", f)
			body := `{"domain":"github.com/guestd","operation":"pull","content":"image=busybox:1 \"q\"","extra":true}`
			w := do(h, "POST", "/aa/aael", body, "")
			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.wantCode, w.Body)
			}
			calls := f.recorded()
			want := call{method: "Extend", domain: "github.com/guestd", op: "pull", content: `image=busybox:1 "q"`}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
				t.Errorf("calls = %+v, want [%+v] (register nil)", calls, want)
			}
			if tt.wantCode != 200 {
				if !strings.Contains(w.Body.String(), tt.wantText) {
					t.Errorf("body %q does not contain %q", w.Body, tt.wantText)
				}
				return
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			var got map[string]string
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("body = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestAAELBodyLimit(t *testing.T) {
	event := func(n int) string {
		return `{"domain":"d","operation":"o","content":"` + strings.Repeat("a", n) + `"}`
	}
	overhead := len(event(0))
	tests := []struct {
		name     string
		body     string
		wantCode int
	}{
		{"exactly the limit", event(MaxBodyBytes - overhead), 200},
		{"one byte over", event(MaxBodyBytes - overhead + 1), 413},
		{"far over", event(4 * MaxBodyBytes), 413},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			h, _ := newHandler(t, "attestation", f)
			w := do(h, "POST", "/aa/aael", tt.body, "")
			if w.Code != tt.wantCode {
				t.Fatalf("status = %d, want %d (body %q)", w.Code, tt.wantCode, w.Body)
			}
			if called := len(f.recorded()) == 1; called != (tt.wantCode == 200) {
				t.Errorf("agent called = %v with status %d", called, w.Code)
			}
		})
	}
}

func TestInfo(t *testing.T) {
	tests := []struct {
		name     string
		features string
		tee      string
		addTees  []string
		want     string // exact body
	}{
		{"resource", "resource", "tdx", []string{"nvidia"},
			`{"version":"v1.2.3","feature":"resource"}`},
		{"default", "", "tdx", nil,
			`{"version":"v1.2.3","feature":"resource"}`},
		{"attestation no additional", "attestation", "snp", nil,
			`{"version":"v1.2.3","tee":"snp","additional_tees":[],"feature":"attestation"}`},
		{"all with additional", "all", "tdx", []string{"nvidia", "sample"},
			`{"version":"v1.2.3","tee":"tdx","additional_tees":["nvidia","sample"],"feature":"all"}`},
		{"empty tee is reported", "all", "", nil,
			`{"version":"v1.2.3","tee":"","additional_tees":[],"feature":"all"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake()
			f.tee, f.addTees = tt.tee, tt.addTees
			h, _ := newHandler(t, tt.features, f)
			w := do(h, "GET", "/info", "", "")
			if w.Code != 200 {
				t.Fatalf("status = %d: %q", w.Code, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if got := w.Body.String(); got != tt.want {
				t.Errorf("body = %s, want %s", got, tt.want)
			}
		})
	}
}

// TestSecretsNotLogged serves resources and tokens with debug logging on
// and checks that neither reaches the log.
func TestSecretsNotLogged(t *testing.T) {
	f := newFake()
	f.resource = []byte("super-secret-resource-value")
	f.token = []byte(`{"token":"secret.jwt.value","tee_keypair":"-----BEGIN PRIVATE KEY-----"}`)
	h, logs := newHandler(t, "all", f)
	for _, target := range []string{"/cdh/resource/default/key/1", "/aa/token?token_type=kbs"} {
		if w := do(h, "GET", target, "", ""); w.Code != 200 {
			t.Fatalf("%s: status = %d: %q", target, w.Code, w.Body)
		}
	}
	if logs.Len() == 0 {
		t.Fatal("nothing logged at debug level; the check below would be vacuous")
	}
	for _, secret := range []string{"super-secret-resource-value", "secret.jwt.value", "PRIVATE KEY"} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("log contains %q:\n%s", secret, logs)
		}
	}
}
