package kbs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sampleattester "github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
	sampleverifier "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// start is the fixed time the tests' clocks start at.
var start = time.Date(2025, 6, 23, 12, 0, 0, 0, time.UTC)

// clock is a settable clock for Config.Now.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a test KBS on httptest with a fake clock, an admin key, the sample
// verifier, an allow-all policy and a repository holding default/key/k1.
type env struct {
	t      *testing.T
	srv    *Server
	hs     *httptest.Server
	clock  *clock
	repo   string
	admin  ed25519.PrivateKey
	client *http.Client
}

const k1 = "secret one\n"

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	repo := t.TempDir()
	writeFile(t, filepath.Join(repo, "default", "key", "k1"), k1)
	c := &clock{now: start}
	cfg := Config{
		RepoDir:   repo,
		Policy:    AllowAll(),
		AdminKey:  pub,
		Verifiers: map[string]Verifier{"sample": sampleverifier.New()},
		Now:       c.Now,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &env{t: t, srv: srv, hs: hs, clock: c, repo: repo, admin: priv, client: hs.Client()}
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// req is one raw HTTP request.
type req struct {
	method, path string
	body         []byte
	cookie       *http.Cookie
	header       map[string]string
}

// resp is a response with its body read.
type resp struct {
	*http.Response
	body []byte
}

func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	hr, err := http.NewRequest(r.method, e.hs.URL+r.path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if r.cookie != nil {
		hr.AddCookie(r.cookie)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := e.client.Do(hr)
	if err != nil {
		e.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{res, b}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func authBody(t *testing.T, tee string) []byte {
	return mustJSON(t, protocol.Request{
		Version:     protocol.Version,
		Tee:         tee,
		ExtraParams: mustJSON(t, protocol.RequestExtraParams{SupportedHashAlgorithms: protocol.SupportedHashAlgorithms}),
	})
}

// auth runs /auth for the sample TEE and returns the challenge and cookie.
func (e *env) auth() (protocol.Challenge, *http.Cookie) {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/kbs/v0/auth", body: authBody(e.t, "sample")})
	if r.StatusCode != http.StatusOK {
		e.t.Fatalf("auth: %d %s", r.StatusCode, r.body)
	}
	var ch protocol.Challenge
	if err := json.Unmarshal(r.body, &ch); err != nil {
		e.t.Fatalf("auth: challenge %s: %v", r.body, err)
	}
	cookies := r.Cookies()
	if len(cookies) != 1 || cookies[0].Name != SessionCookie {
		e.t.Fatalf("auth: cookies %v", cookies)
	}
	return ch, cookies[0]
}

// evidence returns sample evidence binding reportData.
func evidence(t *testing.T, reportData []byte) json.RawMessage {
	t.Helper()
	ev, err := sampleattester.New().Evidence(context.Background(), reportData)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// attestation builds a correct sample Attestation for the challenge, with
// the binding hash the challenge selected.
func attestation(t *testing.T, ch protocol.Challenge, key protocol.TeePubKey, init *protocol.InitData) protocol.Attestation {
	t.Helper()
	h, err := ch.HashAlgorithm()
	if err != nil {
		t.Fatal(err)
	}
	digest, err := protocol.ReportData(h, ch.Nonce, key, "")
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Attestation{
		InitData:    init,
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key},
		TeeEvidence: protocol.CompositeEvidence{Primary: evidence(t, digest)},
	}
}

func newKey(t *testing.T, alg teekey.Algorithm) *teekey.Key {
	t.Helper()
	k, err := teekey.Generate(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// handshake runs /auth and /attest for the sample TEE and returns the
// session cookie, the token and the TEE key.
func (e *env) handshake() (*http.Cookie, string, *teekey.Key) {
	e.t.Helper()
	key := newKey(e.t, teekey.ECP256)
	ch, cookie := e.auth()
	tok := e.attest(cookie, attestation(e.t, ch, key.Public(), nil))
	return cookie, tok, key
}

func (e *env) attest(cookie *http.Cookie, att protocol.Attestation) string {
	e.t.Helper()
	r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: mustJSON(e.t, att), cookie: cookie})
	if r.StatusCode != http.StatusOK {
		e.t.Fatalf("attest: %d %s", r.StatusCode, r.body)
	}
	var tr protocol.TokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil || tr.Token == "" {
		e.t.Fatalf("attest: response %s: %v", r.body, err)
	}
	return tr.Token
}

// open decrypts a 200 resource response.
func open(t *testing.T, r resp, key *teekey.Key) string {
	t.Helper()
	if r.StatusCode != http.StatusOK {
		t.Fatalf("resource: %d %s", r.StatusCode, r.body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("resource Content-Type = %q, want application/json", ct)
	}
	var jwe protocol.Response
	if err := json.Unmarshal(r.body, &jwe); err != nil {
		t.Fatalf("resource: %s: %v", r.body, err)
	}
	plain, err := key.Decrypt(jwe)
	if err != nil {
		t.Fatalf("resource: %v", err)
	}
	return string(plain)
}

// wantError checks an ErrorInformation response.
func wantError(t *testing.T, r resp, status int, variant, detail string) {
	t.Helper()
	if r.StatusCode != status {
		t.Errorf("status = %d, want %d (body %s)", r.StatusCode, status, r.body)
	}
	var info protocol.ErrorInformation
	if err := json.Unmarshal(r.body, &info); err != nil {
		t.Fatalf("body %q is not ErrorInformation: %v", r.body, err)
	}
	if info.Type != protocol.ErrorTypePrefix+variant {
		t.Errorf("type = %q, want variant %s", info.Type, variant)
	}
	if !strings.Contains(info.Detail, detail) {
		t.Errorf("detail = %q, want it to contain %q", info.Detail, detail)
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		t.Errorf("error Content-Type = %q, want none (as trustee)", ct)
	}
}

func bearerHeader(tok string) map[string]string {
	return map[string]string{"Authorization": "Bearer " + tok}
}
