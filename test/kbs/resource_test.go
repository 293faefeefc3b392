package kbs

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/guestd/guestd/kbc/protocol"
)

func TestBearerToken(t *testing.T) {
	e := newEnv(t, nil)
	_, tok, key := e.handshake()

	// Passport mode: no cookie, the token in Authorization.
	r := e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", header: bearerHeader(tok)})
	if got := open(t, r, key); got != k1 {
		t.Errorf("resource = %q", got)
	}

	// A token from another KBS (another signing key) is refused even though
	// its header carries a valid jwk for its signature.
	e2 := newEnv(t, nil)
	_, foreign, _ := e2.handshake()
	tests := []struct {
		name   string
		header map[string]string
		cookie *http.Cookie
		v      string
		detail string
	}{
		{"no token", nil, nil, VariantTokenNotFound, "Attestation Token not found"},
		{"not bearer", map[string]string{"Authorization": "Basic " + tok}, nil, VariantTokenNotFound, "Attestation Token not found"},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, nil, VariantTokenNotFound, "Attestation Token not found"},
		{"garbage", bearerHeader("a.b.c"), nil, VariantTokenVerifierError, "Token Verifier error: parse attestation token"},
		{"foreign signer", bearerHeader(foreign), nil, VariantTokenVerifierError, "Token Verifier error: verify attestation token"},
		{"unknown session falls back to bearer", bearerHeader("x"), &http.Cookie{Name: SessionCookie, Value: "nope"}, VariantTokenVerifierError, "Token Verifier error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", header: tt.header, cookie: tt.cookie})
			wantError(t, r, http.StatusUnauthorized, tt.v, tt.detail)
		})
	}

	// An authed but not attested session falls back to the bearer token.
	_, c := e.auth()
	r = e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: c, header: bearerHeader(tok)})
	if got := open(t, r, key); got != k1 {
		t.Errorf("resource = %q", got)
	}
}

func TestTokenExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionTimeout = time.Hour; c.TokenLifetime = 5 * time.Minute })
	cookie, tok, key := e.handshake()
	get := func() resp {
		return e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie})
	}
	// Within exp plus trustee's 60 s leeway the token is good ...
	e.clock.Advance(5*time.Minute + TokenLeeway)
	open(t, get(), key)
	// ... past it, it is refused from the session and as a bearer token.
	e.clock.Advance(time.Second)
	wantError(t, get(), http.StatusUnauthorized, VariantTokenVerifierError, "token expired at")
	r := e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", header: bearerHeader(tok)})
	wantError(t, r, http.StatusUnauthorized, VariantTokenVerifierError, "token expired at")
	// The session still returns the stored (expired) token on /attest, as
	// trustee does: the client has to start a new handshake.
	r = e.do(req{method: "POST", path: "/kbs/v0/attest", cookie: cookie,
		body: mustJSON(t, attestation(t, protocol.Challenge{Nonce: "n", ExtraParams: []byte(`""`)}, key.Public(), nil))})
	var tr protocol.TokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil || tr.Token != tok {
		t.Errorf("attest on the attested session: %d %s, want the stored token", r.StatusCode, r.body)
	}
}

func TestResourceErrors(t *testing.T) {
	e := newEnv(t, nil)
	if err := os.MkdirAll(filepath.Join(e.repo, "default", "key", "dir"), 0o700); err != nil {
		t.Fatal(err)
	}
	cookie, _, _ := e.handshake()
	tests := []struct {
		method, path string
		status       int
		variant      string
		detail       string
	}{
		{"GET", "/kbs/v0/resource/default/key/missing", 401, VariantPluginInternalError, "Plugin internal error: resource not found: default/key/missing"},
		{"GET", "/kbs/v0/resource/default/key/dir", 401, VariantPluginInternalError, "resource not found: default/key/dir"},
		{"GET", "/kbs/v0/resource/default/key", 401, VariantPluginInternalError, `illegal resource path "default/key"`},
		{"GET", "/kbs/v0/resource/default/key/k1/x", 401, VariantPluginInternalError, "illegal resource path"},
		{"GET", "/kbs/v0/resource/default/.key/k1", 401, VariantPluginInternalError, `segment ".key"`},
		{"GET", "/kbs/v0/resource/default/../k1", 401, VariantPluginInternalError, `segment ".."`},
		{"GET", "/kbs/v0/resource/default//k1", 401, VariantPluginInternalError, `segment ""`},
		{"GET", "/kbs/v0/resource/default/key%2Fk1/x", 401, VariantPluginInternalError, `segment "key/k1"`},
		{"GET", "/kbs/v0/resource/default/k%20y/k1", 401, VariantPluginInternalError, `segment "k y"`},
		{"PUT", "/kbs/v0/resource/default/key/k1", 401, VariantPluginInternalError, "illegal HTTP method PUT"},
		{"GET", "/kbs/v0/foo/a/b/c", 404, VariantPluginNotFound, "Plugin foo not found"},
		{"GET", "/kbs/v0/auth", 404, VariantPluginNotFound, "Plugin auth not found"},
		{"DELETE", "/kbs/v0/attest", 404, VariantPluginNotFound, "Plugin attest not found"},
		{"GET", "/kbs/v0/", 404, VariantPluginNotFound, "Plugin  not found"},
		{"POST", "/kbs/v0/attestation-policy", 404, VariantPluginNotFound, "Plugin attestation-policy not found"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := e.do(req{method: tt.method, path: tt.path, cookie: cookie})
			wantError(t, r, tt.status, tt.variant, tt.detail)
		})
	}

	// Without a token even a bad path is a missing token first, as trustee.
	r := e.do(req{method: "GET", path: "/kbs/v0/resource/a/b"})
	wantError(t, r, 401, VariantTokenNotFound, "Attestation Token not found")

	// Outside the API actix answers itself, with empty bodies.
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/kbs/v1/resource/default/key/k1", 404},
		{"GET", "/kbs/v0", 404},
		{"PATCH", "/kbs/v0/resource/default/key/k1", 405},
		{"GET", "/healthz", 200},
		{"POST", "/healthz", 405},
	} {
		r := e.do(req{method: tt.method, path: tt.path, cookie: cookie})
		if r.StatusCode != tt.status || len(r.body) != 0 {
			t.Errorf("%s %s: %d %q, want %d and no body", tt.method, tt.path, r.StatusCode, r.body, tt.status)
		}
	}
}

func TestPolicyOnServer(t *testing.T) {
	p, err := ParsePolicy(readFile(t, "testdata/policy/sample-default.json"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *Config) { c.Policy = p })
	writeFile(t, filepath.Join(e.repo, "other", "key", "k1"), "other")
	writeFile(t, filepath.Join(e.repo, "prod", "key", "k1"), "prod")
	cookie, _, key := e.handshake()
	get := func(path string) resp {
		return e.do(req{method: "GET", path: "/kbs/v0/resource/" + path, cookie: cookie})
	}

	open(t, get("default/key/k1"), key)
	wantError(t, get("other/key/k1"), 401, VariantPolicyDeny, "Access denied by policy")

	// A rule for another TEE does not apply to the sample token.
	tdxOnly, err := NewPolicy(false, Rule{Tee: "tdx", Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetPolicy(tdxOnly)
	wantError(t, get("default/key/k1"), 401, VariantPolicyDeny, "Access denied by policy")

	// Query parameters reach the policy.
	q, err := NewPolicy(false, Rule{Tee: "sample", Resource: "prod/*/*", Query: map[string]string{"version": "v[12]"}, Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetPolicy(q)
	if got := open(t, get("prod/key/k1?version=v2"), key); got != "prod" {
		t.Errorf("resource = %q", got)
	}
	wantError(t, get("prod/key/k1?version=v3"), 401, VariantPolicyDeny, "")
	wantError(t, get("prod/key/k1"), 401, VariantPolicyDeny, "")

	// nil is deny-all, as trustee's default policy for the sample TEE.
	e.srv.SetPolicy(nil)
	wantError(t, get("default/key/k1"), 401, VariantPolicyDeny, "")
	if st := e.srv.Stats(); st.PolicyDenied != 5 || st.ResourceGets != 2 || st.ResourceFailed != 5 {
		t.Errorf("stats %+v", st)
	}

	// A zero Config denies too.
	e2 := newEnv(t, func(c *Config) { c.Policy = nil })
	c2, _, _ := e2.handshake()
	wantError(t, e2.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: c2}), 401, VariantPolicyDeny, "")
}

func TestOversizedBody(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 1024 })
	tok := e.adminToken(time.Hour)
	for _, tt := range []struct {
		name    string
		path    string
		chunked bool
	}{
		{"auth with length", "/kbs/v0/auth", false},
		{"auth chunked", "/kbs/v0/auth", true},
		{"admin write", "/kbs/v0/resource/default/key/big", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(make([]byte, 1025))
			if tt.chunked {
				body = io.MultiReader(strings.NewReader(" "), bytes.NewReader(make([]byte, 1024)))
			}
			hr, err := http.NewRequest("POST", e.hs.URL+tt.path, body)
			if err != nil {
				t.Fatal(err)
			}
			hr.Header.Set("Authorization", "Bearer "+tok)
			res, err := e.client.Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close()
			b, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "Payload reached size limit." {
				t.Errorf("%d %q, want 413 and actix's message", res.StatusCode, b)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(e.repo, "default", "key", "big")); !os.IsNotExist(err) {
		t.Errorf("oversized write stored something: %v", err)
	}
	// At the limit it is fine.
	r := e.do(req{method: "POST", path: "/kbs/v0/resource/default/key/big", body: make([]byte, 1024), header: bearerHeader(tok)})
	if r.StatusCode != http.StatusOK {
		t.Errorf("write of exactly MaxBodyBytes: %d %s", r.StatusCode, r.body)
	}
}

func (e *env) adminToken(lifetime time.Duration) string {
	e.t.Helper()
	tok, err := MintAdminToken(e.admin, e.clock.Now(), lifetime)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// adminJWT signs arbitrary claims with an Ed25519 key.
func adminJWT(t *testing.T, priv ed25519.PrivateKey, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAdminWriteAndDelete(t *testing.T) {
	e := newEnv(t, nil)
	cookie, _, key := e.handshake()
	tok := e.adminToken(2 * time.Hour)
	path := "/kbs/v0/resource/default/key/new"

	secret := []byte("new secret \x00\xff")
	r := e.do(req{method: "POST", path: path, body: secret, header: map[string]string{
		"Authorization": "Bearer " + tok, "Content-Type": "application/octet-stream"}})
	if r.StatusCode != http.StatusOK || len(r.body) != 0 || r.Header.Get("Content-Type") != "text/xml" {
		t.Fatalf("admin POST: %d %q %q", r.StatusCode, r.Header.Get("Content-Type"), r.body)
	}
	file := filepath.Join(e.repo, "default", "key", "new")
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("stored resource: %v, mode %v", err, fi.Mode())
	}
	if got := open(t, e.do(req{method: "GET", path: path, cookie: cookie}), key); got != string(secret) {
		t.Errorf("resource = %q", got)
	}

	// Overwrite, and no temporary file is left behind.
	e.do(req{method: "POST", path: path, body: []byte("v2"), header: bearerHeader(tok)})
	if got := open(t, e.do(req{method: "GET", path: path, cookie: cookie}), key); got != "v2" {
		t.Errorf("resource after overwrite = %q", got)
	}
	entries, err := os.ReadDir(filepath.Dir(file))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), ".") {
			t.Errorf("temporary file %s left behind", en.Name())
		}
	}

	r = e.do(req{method: "DELETE", path: path, header: bearerHeader(tok)})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("admin DELETE: %d %s", r.StatusCode, r.body)
	}
	wantError(t, e.do(req{method: "GET", path: path, cookie: cookie}), 401, VariantPluginInternalError, "resource not found: default/key/new")
	wantError(t, e.do(req{method: "DELETE", path: path, header: bearerHeader(tok)}), 401, VariantPluginInternalError, "resource not found: default/key/new")
	wantError(t, e.do(req{method: "POST", path: "/kbs/v0/resource/default/.x/y", header: bearerHeader(tok)}), 401, VariantPluginInternalError, "illegal resource path")

	if st := e.srv.Stats(); st.AdminWrites != 2 || st.AdminDeletes != 1 || st.AdminFailed != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestAdminAuth(t *testing.T) {
	_, wrong, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := start.Unix()
	tests := []struct {
		name   string
		noKey  bool // server without admin key
		header func(e *env) map[string]string
		detail string // "" = allowed
	}{
		{"good", false, func(e *env) map[string]string { return bearerHeader(e.adminToken(time.Hour)) }, ""},
		{"exp only", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"exp": now + 60}))
		}, ""},
		{"within leeway", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"exp": now - 30}))
		}, ""},
		{"missing", false, func(e *env) map[string]string { return nil },
			"failed to initialize [admin] configuration: Failed to parse HTTP Auth Bearer header"},
		{"wrong key", false, func(e *env) map[string]string {
			tok, err := MintAdminToken(wrong, start, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return bearerHeader(tok)
		}, "Admin access denied: token does not verify with the admin key"},
		{"expired", false, func(e *env) map[string]string {
			tok, err := MintAdminToken(e.admin, start.Add(-2*time.Hour), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return bearerHeader(tok)
		}, "Admin access denied: token expired at"},
		{"no exp", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"iat": now}))
		}, "missing required claim: exp"},
		{"exp as string", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"exp": "9999999999"}))
		}, "Admin access denied: token claims"},
		{"not yet valid", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"exp": now + 7200, "nbf": now + 3600}))
		}, "token not valid before"},
		{"issued in the future", false, func(e *env) map[string]string {
			return bearerHeader(adminJWT(t, e.admin, map[string]any{"exp": now + 7200, "iat": now + 3600}))
		}, "token issued in the future"},
		{"attestation token", false, func(e *env) map[string]string {
			_, tok, _ := e.handshake()
			return bearerHeader(tok)
		}, "Admin access denied: token is not an EdDSA JWT"},
		{"admin disabled", true, func(e *env) map[string]string { return bearerHeader(e.adminToken(time.Hour)) },
			"Admin access denied: the admin API is disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, func(c *Config) {
				if tt.noKey {
					c.AdminKey = nil
				}
			})
			h := tt.header(e)
			for _, method := range []string{"POST", "DELETE"} {
				r := e.do(req{method: method, path: "/kbs/v0/resource/default/key/k1", body: []byte("x"), header: h})
				if tt.detail == "" {
					if r.StatusCode != http.StatusOK {
						t.Errorf("%s: %d %s", method, r.StatusCode, r.body)
					}
					continue
				}
				wantError(t, r, http.StatusUnauthorized, VariantAdminAuthInitialization, tt.detail)
				if !strings.Contains(string(r.body), `"detail":"failed to initialize [admin] configuration: `) {
					t.Errorf("body %s: want trustee's detail prefix", r.body)
				}
			}
			if tt.detail != "" {
				if got := string(readFile(t, filepath.Join(e.repo, "default", "key", "k1"))); got != k1 {
					t.Errorf("refused admin request changed the resource to %q", got)
				}
				if st := e.srv.Stats(); st.AdminFailed != 2 {
					t.Errorf("stats %+v, want 2 admin failures", st)
				}
			}
		})
	}
}

func TestAdminResourcePolicy(t *testing.T) {
	e := newEnv(t, nil)
	cookie, _, _ := e.handshake()
	tok := e.adminToken(time.Hour)
	set := func(body string, h map[string]string) resp {
		return e.do(req{method: "POST", path: "/kbs/v0/resource-policy", body: []byte(body), header: h})
	}
	doc := `{"default":"deny","rules":[{"tee":"sample","resource":"other/*/*","allow":true}]}`
	r := set(`{"policy":"`+b64url(doc)+`"}`, bearerHeader(tok))
	if r.StatusCode != http.StatusOK {
		t.Fatalf("set policy: %d %s", r.StatusCode, r.body)
	}
	wantError(t, e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie}), 401, VariantPolicyDeny, "")

	r = e.do(req{method: "GET", path: "/kbs/v0/resource-policy", header: bearerHeader(tok)})
	if r.StatusCode != http.StatusOK || string(r.body) != `{"default":"deny","rules":[{"tee":"sample","resource":"other/*/*","allow":true}]}` {
		t.Errorf("get policy: %d %s", r.StatusCode, r.body)
	}

	for _, tt := range []struct {
		name, body string
		header     map[string]string
		variant    string
		detail     string
	}{
		{"no admin", `{"policy":"` + b64url(doc) + `"}`, nil, VariantAdminAuthAccess, "admin access denied for endpoint resource-policy: Failed to parse HTTP Auth Bearer header"},
		{"not JSON", `{`, bearerHeader(tok), VariantParsePolicyError, "Failed to parse policy: Illegal SetPolicy Request Json"},
		{"no policy", `{}`, bearerHeader(tok), VariantParsePolicyError, "No `policy` field"},
		{"padded base64", `{"policy":"` + b64url(doc) + `="}`, bearerHeader(tok), VariantParsePolicyError, "Failed to decode policy"},
		{"bad document", `{"policy":"` + b64url(`{"rules":[{"tee":"x"}]}`) + `"}`, bearerHeader(tok), VariantParsePolicyError, `rule 0 has no "allow"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			wantError(t, set(tt.body, tt.header), 401, tt.variant, tt.detail)
		})
	}
	wantError(t, e.do(req{method: "GET", path: "/kbs/v0/resource-policy"}), 401, VariantAdminAuthAccess, "")
}

func TestStats(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.adminToken(time.Hour)
	cookie, _, _ := e.handshake()                                                     // auth 1, attest 1
	e.do(req{method: "POST", path: "/kbs/v0/auth", body: []byte(`{}`)})               // auth failed 1
	e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie}) // get 1
	e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/no", cookie: cookie}) // failed 1
	e.do(req{method: "POST", path: "/kbs/v0/resource/default/key/x", body: []byte("x"), header: bearerHeader(tok)})
	e.do(req{method: "DELETE", path: "/kbs/v0/resource/default/key/x", header: bearerHeader(tok)})
	e.do(req{method: "DELETE", path: "/kbs/v0/resource/default/key/x"}) // admin failed 1
	want := Stats{Auth: 1, AuthFailed: 1, Attest: 1, ResourceGets: 1, ResourceFailed: 1,
		AdminWrites: 1, AdminDeletes: 1, AdminFailed: 1, Sessions: 1}
	if got := e.srv.Stats(); got != want {
		t.Errorf("Stats() = %+v\nwant      %+v", got, want)
	}
}

func TestNewConfig(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"hash", Config{HashAlgorithm: "SHA256"}, true},
		{"bad hash", Config{HashAlgorithm: "md5"}, false},
		{"short admin key", Config{AdminKey: make([]byte, 31)}, false},
		{"nil verifier", Config{Verifiers: map[string]Verifier{"sample": nil}}, false},
		{"negative timeout", Config{SessionTimeout: -1}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if (err == nil) != tt.ok {
				t.Errorf("New: %v, want ok=%v", err, tt.ok)
			}
		})
	}
	// The zero Config refuses every TEE at /auth.
	srv, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	if srv.cfg.SessionTimeout != DefaultSessionTimeout || srv.cfg.TokenLifetime != DefaultTokenLifetime || srv.cfg.MaxBodyBytes != DefaultMaxBodyBytes {
		t.Errorf("defaults not applied: %+v", srv.cfg)
	}
}
