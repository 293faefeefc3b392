package kbs_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/teekey"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// clock is a settable clock shared by a test KBS and a client.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now()} }

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

// repo writes resources (path → content) into a fresh repository directory.
func repo(t testing.TB, resources map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, c := range resources {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

var testResources = map[string]string{
	"default/key/1":             "0123456789abcdef0123456789abcdef",
	"default/security-policy/x": `{"default":[{"type":"reject"}]}`,
	"other/key/1":               "other",
}

func kbsConfig(t testing.TB) testkbs.Config {
	return testkbs.Config{
		RepoDir:   repo(t, testResources),
		Policy:    testkbs.AllowAll(),
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()},
	}
}

func newClient(t testing.TB, url string, mod func(*kbs.Config)) *kbs.Client {
	t.Helper()
	cfg := kbs.Config{URL: url, Attester: sample.New(), Timeout: 10 * time.Second,
		InitialBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := kbs.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustURI(t testing.TB, s string) resource.URI {
	t.Helper()
	u, err := resource.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestGetResource(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*kbs.Config)
	}{
		{"cookie P-256", nil},
		{"P-521", func(c *kbs.Config) { c.KeyAlgorithm = teekey.ECP521 }},
		{"RSA-OAEP-256", func(c *kbs.Config) { c.KeyAlgorithm = teekey.RSAOAEP256 }},
		{"passport", func(c *kbs.Config) { c.Passport = true }},
		{"init-data", func(c *kbs.Config) {
			c.InitData = &protocol.InitData{Format: "toml", Body: "algorithm = \"sha384\"\nversion = \"0.1.0\"\n[data]\n\"aa.toml\" = \"\"\n"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := kbstest.Start(t, kbsConfig(t))
			c := newClient(t, k.URL, tc.mod)
			got, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != testResources["default/key/1"] {
				t.Fatalf("resource = %q", got)
			}
		})
	}
}

// TestHashAlgorithms runs the handshake with each hash the KBS may select,
// in both forms of extra-params.
func TestHashAlgorithms(t *testing.T) {
	for _, h := range []protocol.HashAlgorithm{"", protocol.SHA256, protocol.SHA384, protocol.SHA512} {
		t.Run(string(h)+"-", func(t *testing.T) {
			cfg := kbsConfig(t)
			cfg.HashAlgorithm = h
			k := kbstest.Start(t, cfg)
			if _, err := newClient(t, k.URL, nil).GetResource(context.Background(), mustURI(t, "kbs:///default/key/1")); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOneHandshakeForManyFetches: N fetches cost one RCAR and N GETs.
func TestOneHandshakeForManyFetches(t *testing.T) {
	k := kbstest.Start(t, kbsConfig(t))
	c := newClient(t, k.URL, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s := k.Server.Stats(); s.Auth != 1 || s.Attest != 1 {
		t.Fatalf("KBS saw %d /auth and %d /attest for 20 fetches, want 1 and 1", s.Auth, s.Attest)
	}
	if s := c.Stats(); s.Attestations != 1 || s.Fetches != 20 {
		t.Fatalf("client stats %+v, want 1 attestation and 20 fetches", s)
	}
}

func TestAttestClaims(t *testing.T) {
	k := kbstest.Start(t, kbsConfig(t))
	c := newClient(t, k.URL, nil)
	tok, err := c.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok.Expiry.IsZero() || tok.Expiry.Before(time.Now()) {
		t.Fatalf("token expiry %v", tok.Expiry)
	}
	var claims struct {
		Submods map[string]struct {
			Evidence struct {
				RuntimeData struct {
					TeePubKey protocol.TeePubKey `json:"tee-pubkey"`
				} `json:"runtime_data_claims"`
			} `json:"ear.veraison.annotated-evidence"`
		} `json:"submods"`
	}
	if err := json.Unmarshal(tok.Claims, &claims); err != nil {
		t.Fatal(err)
	}
	if claims.Submods["cpu0"].Evidence.RuntimeData.TeePubKey.Kty != "EC" {
		t.Fatalf("token claims do not carry the TEE key: %s", tok.Claims)
	}
	// A second Attest reuses the cached token.
	tok2, err := c.Attest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if tok2.Raw != tok.Raw || k.Server.Stats().Attest != 1 {
		t.Fatal("second Attest did not reuse the cached token")
	}
}

// TestTokenExpiry: an expired token is replaced by a new attestation before
// the fetch, without a 401 round trip.
func TestTokenExpiry(t *testing.T) {
	clk := newClock()
	cfg := kbsConfig(t)
	cfg.Now = clk.Now
	cfg.TokenLifetime = time.Hour
	cfg.SessionTimeout = 2 * time.Hour
	k := kbstest.Start(t, cfg)
	c := newClient(t, k.URL, func(c *kbs.Config) { c.Now = clk.Now })
	uri := mustURI(t, "kbs:///default/key/1")
	if _, err := c.GetResource(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	clk.Advance(59*time.Minute + 55*time.Second) // within the renewal skew
	if _, err := c.GetResource(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	if s := k.Server.Stats(); s.Attest != 2 || s.ResourceFailed != 0 {
		t.Fatalf("stats %+v: want a second attestation and no 401", s)
	}
}

// TestExpiredSession: the KBS forgets the session (its 5 minutes pass while
// the token is still valid); the 401 triggers exactly one re-attestation.
func TestExpiredSession(t *testing.T) {
	clk := newClock()
	cfg := kbsConfig(t)
	cfg.Now = clk.Now
	cfg.SessionTimeout = 5 * time.Minute
	cfg.TokenLifetime = time.Hour
	k := kbstest.Start(t, cfg)
	c := newClient(t, k.URL, func(c *kbs.Config) { c.Now = clk.Now })
	uri := mustURI(t, "kbs:///default/key/1")
	if _, err := c.GetResource(context.Background(), uri); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * time.Minute)
	got, err := c.GetResource(context.Background(), uri)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != testResources["default/key/1"] {
		t.Fatalf("resource = %q", got)
	}
	if s := k.Server.Stats(); s.Attest != 2 || s.ResourceFailed != 1 {
		t.Fatalf("stats %+v: want one 401 and one re-attestation", s)
	}
}

// rewrite is a transport that lets a test play the man in the middle.
type rewrite struct {
	base    http.RoundTripper
	request func(path string, body []byte) []byte
}

func (r rewrite) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil && r.request != nil {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		body = r.request(req.URL.Path, body)
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	return r.base.RoundTrip(req)
}

func editJSON(t testing.TB, body []byte, edit func(map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("edit request: %v", err)
		return body
	}
	edit(m)
	out, _ := json.Marshal(m)
	return out
}

// tamperedAttester corrupts the report data its evidence carries.
type tamperedAttester struct{ attester.Attester }

func (a tamperedAttester) Evidence(ctx context.Context, rd []byte) (json.RawMessage, error) {
	rd = append([]byte(nil), rd...)
	rd[0] ^= 0xff
	return a.Attester.Evidence(ctx, rd)
}

func TestNegative(t *testing.T) {
	otherKey, err := teekey.Generate(teekey.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		kbs    func(*testkbs.Config)
		client func(*kbs.Config)
		uri    string
		want   []string // substrings the error must contain
	}{
		{
			name: "wrong nonce",
			client: func(c *kbs.Config) {
				c.Transport = rewrite{base: http.DefaultTransport, request: func(p string, b []byte) []byte {
					if !strings.HasSuffix(p, "/attest") {
						return b
					}
					return editJSON(t, b, func(m map[string]any) {
						m["runtime-data"].(map[string]any)["nonce"] = base64.StdEncoding.EncodeToString(make([]byte, 32))
					})
				}}
			},
			want: []string{"kbs attest", "401", "nonce"},
		},
		{
			name:   "tampered report",
			client: func(c *kbs.Config) { c.Attester = tamperedAttester{sample.New()} },
			want:   []string{"kbs attest", "401", "report_data", "binding digest"},
		},
		{
			name: "key not bound",
			client: func(c *kbs.Config) {
				c.Transport = rewrite{base: http.DefaultTransport, request: func(p string, b []byte) []byte {
					if !strings.HasSuffix(p, "/attest") {
						return b
					}
					return editJSON(t, b, func(m map[string]any) {
						m["runtime-data"].(map[string]any)["tee-pubkey"] = otherKey.Public()
					})
				}}
			},
			want: []string{"kbs attest", "401", "report_data", "binding digest"},
		},
		{
			name: "version mismatch",
			client: func(c *kbs.Config) {
				c.Transport = rewrite{base: http.DefaultTransport, request: func(p string, b []byte) []byte {
					return bytes.Replace(b, []byte(`"version":"0.4.0"`), []byte(`"version":"0.3.0"`), 1)
				}}
			},
			want: []string{"kbs auth", "401", "Version Mismatch", "0.3.0"},
		},
		{
			name: "policy deny",
			kbs:  func(c *testkbs.Config) { c.Policy = testkbs.DenyAll() },
			want: []string{"kbs get resource", "401", "PolicyDeny"},
		},
		{
			name: "missing resource",
			uri:  "kbs:///default/key/nope",
			want: []string{"kbs get resource", "401", "default/key/nope"},
		},
		{
			name: "unknown plugin",
			uri:  "kbs+nosuch:///a/b/c",
			want: []string{"kbs get resource", "404"},
		},
		{
			name: "TEE without a verifier",
			kbs:  func(c *testkbs.Config) { c.Verifiers = map[string]testkbs.Verifier{} },
			want: []string{"kbs auth", "401", "sample"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := kbsConfig(t)
			if tc.kbs != nil {
				tc.kbs(&cfg)
			}
			k := kbstest.Start(t, cfg)
			c := newClient(t, k.URL, tc.client)
			uri := tc.uri
			if uri == "" {
				uri = "kbs:///default/key/1"
			}
			_, err := c.GetResource(context.Background(), mustURI(t, uri))
			if err == nil {
				t.Fatal("GetResource succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			var kerr *kbs.Error
			if !errors.As(err, &kerr) {
				t.Errorf("error %v is not a *kbs.Error", err)
			}
		})
	}
}

// TestPolicyDenyCostsOneRetry: a 401 on a fetch re-attests once, not in a loop.
func TestPolicyDenyCostsOneRetry(t *testing.T) {
	cfg := kbsConfig(t)
	cfg.Policy = testkbs.DenyAll()
	k := kbstest.Start(t, cfg)
	c := newClient(t, k.URL, nil)
	if _, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1")); err == nil {
		t.Fatal("GetResource succeeded")
	}
	if s := k.Server.Stats(); s.Attest != 2 || s.PolicyDenied != 2 || s.ResourceGets != 0 {
		t.Fatalf("stats %+v: want 2 attestations and 2 denied GETs", s)
	}
}

// forwardTo is a reverse proxy to a real KBS, cookies and all.
func forwardTo(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}
}

// hostile answers the paths in handlers itself and forwards the rest to a
// real test KBS, to test the client's handling of a lying KBS.
func hostile(t *testing.T, handlers map[string]http.HandlerFunc) string {
	t.Helper()
	forward := forwardTo(kbstest.Start(t, kbsConfig(t)).URL)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for suffix, h := range handlers {
			if strings.HasSuffix(r.URL.Path, suffix) {
				h(w, r)
				return
			}
		}
		forward(w, r)
	}))
	t.Cleanup(proxy.Close)
	return proxy.URL
}

func TestHostileResponses(t *testing.T) {
	big := bytes.Repeat([]byte("A"), 2<<20)
	for _, tc := range []struct {
		name    string
		handler map[string]http.HandlerFunc
		limit   int64
		want    string
	}{
		{"garbage challenge", map[string]http.HandlerFunc{"/auth": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("<html>not json"))
		}}, 0, "kbs auth"},
		{"challenge without nonce", map[string]http.HandlerFunc{"/auth": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"extra-params":""}`))
		}}, 0, "no nonce"},
		{"oversized challenge", map[string]http.HandlerFunc{"/auth": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(big)
		}}, 0, "exceeds"},
		{"garbage token", map[string]http.HandlerFunc{"/attest": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"token":"not.a.jwt"}`))
		}}, 0, "token is not a JWT"},
		{"garbage resource", map[string]http.HandlerFunc{"/resource/default/key/1": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"protected":"e30","encrypted_key":"","iv":"","ciphertext":"","tag":""}`))
		}}, 0, "refused"},
		{"oversized resource", map[string]http.HandlerFunc{"/resource/default/key/1": func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(big)
		}}, 1 << 20, "exceeds"},
		{"error without body", map[string]http.HandlerFunc{"/attest": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		}}, 0, "HTTP 403"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := hostile(t, tc.handler)
			c := newClient(t, url, func(c *kbs.Config) { c.MaxResourceBytes = tc.limit })
			_, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestRetries5xx: transient 5xx answers are retried with backoff, and the
// handshake then completes.
func TestRetries5xx(t *testing.T) {
	real := kbstest.Start(t, kbsConfig(t))
	forward := forwardTo(real.URL)
	var auths atomic.Int32
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/auth") && auths.Add(1) <= 2 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		forward(w, r)
	}))
	t.Cleanup(proxy.Close)
	c := newClient(t, proxy.URL, nil)
	if _, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1")); err != nil {
		t.Fatal(err)
	}
	if auths.Load() != 3 || real.Server.Stats().Auth != 1 {
		t.Fatalf("/auth tried %d times (want 3), KBS saw %d (want 1)", auths.Load(), real.Server.Stats().Auth)
	}
}

// TestNoRetryOn4xx: a refusal is final; it is not hammered.
func TestNoRetryOn4xx(t *testing.T) {
	var auths atomic.Int32
	url := hostile(t, map[string]http.HandlerFunc{"/auth": func(w http.ResponseWriter, r *http.Request) {
		auths.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"type":"https://github.com/confidential-containers/kbs/errors/AttestationError","detail":"no"}`))
	}})
	_, err := newClient(t, url, nil).GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
	if err == nil || !strings.Contains(err.Error(), "AttestationError: no") {
		t.Fatalf("error %v", err)
	}
	if auths.Load() != 1 {
		t.Fatalf("/auth tried %d times, want 1", auths.Load())
	}
}

func TestNotListening(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	const deadline = 1500 * time.Millisecond
	c := newClient(t, "http://"+addr, func(c *kbs.Config) { c.Timeout = deadline })
	start := time.Now()
	_, err = c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "kbs auth") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("error %v, want a refused connection at the auth step", err)
	}
	if !strings.Contains(err.Error(), "attempts") {
		t.Errorf("error %v does not say it retried", err)
	}
	// The deadline is a correctness property (the call must give up), so the
	// bound is generous: it only catches a client that ignores it.
	if elapsed > deadline+2*time.Second {
		t.Fatalf("gave up after %v, deadline %v", elapsed, deadline)
	}
}

func TestHTTPS(t *testing.T) {
	k := kbstest.StartTLS(t, kbsConfig(t))
	t.Run("trusted CA", func(t *testing.T) {
		c := newClient(t, k.URL, func(c *kbs.Config) { c.CertPEM = k.CAPEM })
		if _, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		other := kbstest.StartTLS(t, kbsConfig(t))
		c := newClient(t, k.URL, func(c *kbs.Config) { c.CertPEM = other.CAPEM })
		_, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("error %v, want a certificate error", err)
		}
		if strings.Contains(err.Error(), "attempts") {
			t.Fatalf("error %v: a refused certificate was retried", err)
		}
	})
	t.Run("no CA", func(t *testing.T) {
		c := newClient(t, k.URL, nil)
		_, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
		if err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("error %v, want a certificate error", err)
		}
	})
	t.Run("bad PEM", func(t *testing.T) {
		_, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), CertPEM: []byte("junk")})
		if err == nil || !strings.Contains(err.Error(), "PEM") {
			t.Fatalf("error %v", err)
		}
	})
}

func TestNewRejects(t *testing.T) {
	for _, cfg := range []kbs.Config{
		{URL: "ftp://x", Attester: sample.New()},
		{URL: "http://", Attester: sample.New()},
		{URL: "http://127.0.0.1:1"},
		{URL: "http://127.0.0.1:1", Attester: sample.New(), KeyAlgorithm: "RSA1_5"},
	} {
		if _, err := kbs.New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// BenchmarkFetch20 fetches 20 resources with one client and reports the
// handshakes the KBS saw (must be 1) and the time per 20 fetches.
func BenchmarkFetch20(b *testing.B) {
	k := kbstest.Start(b, kbsConfig(b))
	uri := mustURI(b, "kbs:///default/key/1")
	var handshakes int64
	for b.Loop() {
		before := k.Server.Stats().Attest
		c := newClient(b, k.URL, nil)
		for range 20 {
			if _, err := c.GetResource(context.Background(), uri); err != nil {
				b.Fatal(err)
			}
		}
		handshakes = k.Server.Stats().Attest - before
	}
	b.ReportMetric(float64(handshakes), "handshakes/20fetches")
}

// TestDeadlineNamesTheCause: when the deadline cuts an attempt short, the
// error still says what made the earlier attempts fail.
func TestDeadlineNamesTheCause(t *testing.T) {
	var auths atomic.Int32
	release := make(chan struct{})
	url := hostile(t, map[string]http.HandlerFunc{"/auth": func(w http.ResponseWriter, r *http.Request) {
		if auths.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		// Hang until the client gives up (the body is read so that the
		// server notices the client closing) or the test ends.
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}})
	t.Cleanup(func() { close(release) }) // runs before the server's Close
	c := newClient(t, url, func(c *kbs.Config) { c.Timeout = 500 * time.Millisecond })
	_, err := c.GetResource(context.Background(), mustURI(t, "kbs:///default/key/1"))
	if err == nil || !strings.Contains(err.Error(), "deadline") || !strings.Contains(err.Error(), "HTTP 503") {
		t.Fatalf("error %v: want the deadline and the earlier 503", err)
	}
}
