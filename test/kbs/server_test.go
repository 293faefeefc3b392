package kbs

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestd/guestd/kbc/protocol"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogsKeepSecrets(t *testing.T) {
	var logs syncBuffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	admin := e.adminToken(time.Hour)
	const secret = "admin-written-secret"
	e.do(req{method: "POST", path: "/kbs/v0/resource/default/key/w", body: []byte(secret), header: bearerHeader(admin)})
	cookie, tok, key := e.handshake()
	open(t, e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/w", cookie: cookie}), key)
	e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/missing", header: bearerHeader(tok)})
	e.do(req{method: "POST", path: "/kbs/v0/attest", body: []byte(`{}`), cookie: cookie})
	e.do(req{method: "DELETE", path: "/kbs/v0/resource/default/key/w", header: bearerHeader(admin + "x")})
	e.do(req{method: "POST", path: "/kbs/v0/resource-policy", body: []byte(`{"policy":"` + b64url(`{"default":"allow"}`) + `"}`), header: bearerHeader(admin)})

	out := logs.String()
	if !strings.Contains(out, "resource written") || !strings.Contains(out, "PluginInternalError") {
		t.Fatalf("expected log lines missing:\n%s", out)
	}
	x, y := key.Public().X, key.Public().Y
	for name, s := range map[string]string{
		"resource": secret, "k1": strings.TrimSpace(k1), "token": tok, "token signature": tok[strings.LastIndex(tok, ".")+1:],
		"admin token": admin, "session id": cookie.Value, "tee key x": x, "tee key y": y,
	} {
		if strings.Contains(out, s) {
			t.Errorf("logs contain the %s:\n%s", name, out)
		}
	}
}

func TestPathDecoding(t *testing.T) {
	e := newEnv(t, nil)
	cookie, _, key := e.handshake()
	// actix decodes percent-encoded characters other than "/" before
	// routing; so does this server.
	for _, p := range []string{"/kbs/v0/resource/default/%6Bey/k1", "/kbs/%760/resource/default/key/k1"} {
		if got := open(t, e.do(req{method: "GET", path: p, cookie: cookie}), key); got != k1 {
			t.Errorf("%s: %q", p, got)
		}
	}
}

func TestMalformedQuery(t *testing.T) {
	e := newEnv(t, nil)
	cookie, _, _ := e.handshake()
	r := e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1?a=%zz", cookie: cookie})
	if r.StatusCode != http.StatusBadRequest || !strings.HasPrefix(string(r.body), "Query deserialize error") {
		t.Errorf("malformed query: %d %s", r.StatusCode, r.body)
	}
}

// FuzzServe throws arbitrary bodies and paths at every endpoint, with and
// without a live session: the server must answer (never panic) and every
// 401/404 must be ErrorInformation.
func FuzzServe(f *testing.F) {
	f.Add("POST", "auth", []byte(`{"version":"0.4.0","tee":"sample","extra-params":{}}`))
	f.Add("POST", "attest", []byte(`{"runtime-data":{"nonce":"x","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"ECDH-ES+A256KW","x":"","y":""}},"tee-evidence":{"primary_evidence":null,"additional_evidence":"{\"sample\":1}"},"init-data":{"format":"toml","body":"[data]"}}`))
	f.Add("POST", "attest", []byte(`{"runtime-data":{"nonce":"x","tee-pubkey":{"kty":"RSA","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`))
	f.Add("GET", "resource/a/b/c?x=1", []byte(nil))
	f.Add("POST", "resource/a/b/c", []byte("data"))
	f.Add("POST", "resource-policy", []byte(`{"policy":"e30"}`))
	f.Add("DELETE", "resource/../../x", []byte(nil))

	srv, err := New(Config{
		RepoDir:   f.TempDir(),
		Policy:    AllowAll(),
		AdminKey:  make([]byte, 32),
		Verifiers: map[string]Verifier{"sample": fuzzVerifier{}},
	})
	if err != nil {
		f.Fatal(err)
	}
	// A live session to attest against.
	rec := httptest.NewRecorder()
	srv.ServeHTTP(rec, httptest.NewRequest("POST", "/kbs/v0/auth", strings.NewReader(`{"version":"0.4.0","tee":"sample","extra-params":null}`)))
	cookie := rec.Result().Cookies()[0]

	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		r, err := http.NewRequest(method, "http://kbs/kbs/v0/"+path, bytes.NewReader(body))
		if err != nil {
			return
		}
		r.AddCookie(cookie)
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		if w.Code == http.StatusUnauthorized || (w.Code == http.StatusNotFound && w.Body.Len() > 0) {
			var info protocol.ErrorInformation
			if err := json.Unmarshal(w.Body.Bytes(), &info); err != nil || !strings.HasPrefix(info.Type, protocol.ErrorTypePrefix) {
				t.Errorf("%s %s: %d %q is not ErrorInformation", method, path, w.Code, w.Body.Bytes())
			}
		}
	})
}

// fuzzVerifier accepts any evidence.
type fuzzVerifier struct{}

func (fuzzVerifier) Verify(_ context.Context, _ json.RawMessage, rd []byte) (map[string]any, error) {
	return map[string]any{"report_data": rd}, nil
}
