package kbs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/teekey"
)

// Defaults for Config's zero values.
const (
	DefaultTimeout          = 60 * time.Second
	DefaultRequestTimeout   = 30 * time.Second
	DefaultInitialBackoff   = 200 * time.Millisecond
	DefaultMaxBackoff       = 5 * time.Second
	DefaultMaxResourceBytes = 32 << 20
	maxHandshakeBytes       = 1 << 20
	// expirySkew renews a token this long before its exp, so a token does
	// not expire between the check and the KBS reading it.
	expirySkew = 10 * time.Second
)

// Config configures a Client.
type Config struct {
	// URL is the KBS base URL, http or https (cc_kbc::<URL>).
	URL string
	// CertPEM holds extra root CAs the KBS's certificate may chain to
	// (`kbs_cert` in the CDH config, `cert` in the AA config), added to the
	// system roots.
	CertPEM []byte
	// KeyAlgorithm is the TEE key algorithm; "" means EC P-256.
	KeyAlgorithm teekey.Algorithm
	// Attester produces the TEE evidence.
	Attester attester.Attester
	// InitData, if set, is sent as the attestation's init-data.
	InitData *protocol.InitData
	// Passport sends the attestation token as `Authorization: Bearer` on
	// resource requests instead of relying on the session cookie.
	Passport bool
	// Timeout bounds each Attest or GetResource call, retries included
	// (default 60 s). A shorter context deadline wins.
	Timeout time.Duration
	// RequestTimeout bounds each HTTP request (default 30 s).
	RequestTimeout time.Duration
	// InitialBackoff and MaxBackoff shape the retry delays (defaults 200 ms
	// and 5 s).
	InitialBackoff, MaxBackoff time.Duration
	// MaxResourceBytes caps a resource response (default 32 MiB).
	MaxResourceBytes int64
	// Transport replaces the HTTP transport (tests); CertPEM is then ignored.
	Transport http.RoundTripper
	// Now is the clock for token expiry (default time.Now).
	Now func() time.Time
	// Logger receives debug and warning logs; never secrets.
	Logger *slog.Logger
}

// Token is an attestation token from the KBS.
type Token struct {
	// Raw is the JWT as the KBS issued it.
	Raw string
	// Expiry is the token's exp; zero if it has none.
	Expiry time.Time
	// Claims is the JWT payload (unverified: the client cannot check the
	// KBS's signature, and does not need to).
	Claims json.RawMessage
}

// Stats counts the client's protocol traffic.
type Stats struct {
	Attestations int // successful /auth + /attest handshakes
	Fetches      int // resource GETs sent
}

// Client is a KBS protocol client. It is safe for concurrent use.
type Client struct {
	cfg  Config
	base *url.URL
	http *http.Client
	log  *slog.Logger

	mu    sync.Mutex // serialises attestation; guards the fields below
	token *Token
	key   *teekey.Key
	stats Stats
}

// New checks cfg and returns a Client. It does not contact the KBS.
func New(cfg Config) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(cfg.URL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("kbs client: URL %q is not an http(s) URL", cfg.URL)
	}
	if cfg.Attester == nil {
		return nil, fmt.Errorf("kbs client: no attester")
	}
	if cfg.KeyAlgorithm, err = teekey.ParseAlgorithm(string(cfg.KeyAlgorithm)); err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = DefaultRequestTimeout
	}
	if cfg.InitialBackoff <= 0 {
		cfg.InitialBackoff = DefaultInitialBackoff
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = DefaultMaxBackoff
	}
	if cfg.MaxResourceBytes <= 0 {
		cfg.MaxResourceBytes = DefaultMaxResourceBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	transport := cfg.Transport
	if transport == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = http.ProxyFromEnvironment
		if len(cfg.CertPEM) > 0 {
			pool, err := x509.SystemCertPool()
			if err != nil {
				pool = x509.NewCertPool()
			}
			if !pool.AppendCertsFromPEM(cfg.CertPEM) {
				return nil, fmt.Errorf("kbs client: the KBS certificate holds no PEM certificate")
			}
			t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
		transport = t
	}
	if base.Scheme == "http" {
		log.Warn("KBS transport is plain HTTP: sessions and tokens travel unprotected (resources stay sealed to the TEE key)", "kbs", base.String())
	}
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, fmt.Errorf("kbs client: %w", err)
	}
	return &Client{
		cfg:  cfg,
		base: base,
		http: &http.Client{Transport: transport, Jar: jar, Timeout: cfg.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		log: log,
	}, nil
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Attest returns a valid attestation token, attesting only if the cached
// one is missing or about to expire.
func (c *Client) Attest(ctx context.Context) (*Token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tok, _, err := c.session(ctx, nil)
	return tok, err
}

// session returns the cached token and key, attesting first if there is
// none, it expires within expirySkew, or it is stale (the token a caller saw
// rejected with 401).
func (c *Client) session(ctx context.Context, stale *Token) (*Token, *teekey.Key, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != nil && c.token != stale &&
		(c.token.Expiry.IsZero() || c.cfg.Now().Add(expirySkew).Before(c.token.Expiry)) {
		return c.token, c.key, nil
	}
	c.token, c.key = nil, nil
	tok, key, err := c.handshake(ctx)
	if err != nil {
		return nil, nil, err
	}
	c.token, c.key = tok, key
	c.stats.Attestations++
	return tok, key, nil
}

// handshake runs /auth and /attest.
func (c *Client) handshake(ctx context.Context) (*Token, *teekey.Key, error) {
	tee := c.cfg.Attester.Tee()
	extra, err := json.Marshal(protocol.RequestExtraParams{SupportedHashAlgorithms: protocol.SupportedHashAlgorithms})
	if err != nil {
		return nil, nil, err
	}
	body, err := json.Marshal(protocol.Request{Version: protocol.Version, Tee: tee, ExtraParams: extra})
	if err != nil {
		return nil, nil, err
	}
	var ch protocol.Challenge
	if err := c.postJSON(ctx, "auth", body, &ch); err != nil {
		return nil, nil, err
	}
	if ch.Nonce == "" {
		return nil, nil, c.stepError("auth", "/kbs/v0/auth", 0, nil, errors.New("challenge has no nonce"))
	}
	hash, err := ch.HashAlgorithm()
	if err != nil {
		return nil, nil, c.stepError("auth", "/kbs/v0/auth", 0, nil, err)
	}

	key, err := teekey.Generate(c.cfg.KeyAlgorithm)
	if err != nil {
		return nil, nil, err
	}
	reportData, err := protocol.ReportData(hash, ch.Nonce, key.Public(), "")
	if err != nil {
		return nil, nil, err
	}
	evidence, err := c.cfg.Attester.Evidence(ctx, reportData)
	if err != nil {
		return nil, nil, fmt.Errorf("kbs attest: get %s evidence: %w", tee, err)
	}
	body, err = json.Marshal(protocol.Attestation{
		InitData:    c.cfg.InitData,
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key.Public()},
		TeeEvidence: protocol.CompositeEvidence{Primary: evidence, Additional: ""},
	})
	if err != nil {
		return nil, nil, err
	}
	var tr protocol.TokenResponse
	if err := c.postJSON(ctx, "attest", body, &tr); err != nil {
		return nil, nil, err
	}
	tok, err := parseToken(tr.Token)
	if err != nil {
		return nil, nil, c.stepError("attest", "/kbs/v0/attest", 0, nil, err)
	}
	c.log.Debug("attested to KBS", "kbs", c.base.String(), "tee", tee, "hash", hash, "expiry", tok.Expiry)
	return tok, key, nil
}

// parseToken reads the token's claims without verifying its signature.
func parseToken(raw string) (*Token, error) {
	if raw == "" {
		return nil, errors.New("the KBS answered with an empty token")
	}
	jws, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{
		jose.ES256, jose.ES384, jose.ES512, jose.RS256, jose.RS384, jose.RS512,
		jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
	})
	if err != nil {
		return nil, fmt.Errorf("token is not a JWT: %w", err)
	}
	var std jwt.Claims
	var claims json.RawMessage
	if err := jws.UnsafeClaimsWithoutVerification(&std, &claims); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	tok := &Token{Raw: raw, Claims: claims}
	if std.Expiry != nil {
		tok.Expiry = std.Expiry.Time()
	}
	return tok, nil
}

// GetResource fetches the resource uri names and opens it.
func (c *Client) GetResource(ctx context.Context, uri resource.URI) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	path := uri.HTTPPath()
	var stale *Token
	for attempt := 0; ; attempt++ {
		tok, key, err := c.session(ctx, stale)
		if err != nil {
			return nil, fmt.Errorf("get resource %s: %w", uri, err)
		}
		var sealed protocol.Response
		status, err := c.fetch(ctx, path, tok, &sealed)
		if status == http.StatusUnauthorized && attempt == 0 {
			c.log.Debug("KBS refused the token; attesting again", "resource", uri.String())
			stale = tok
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("get resource %s: %w", uri, err)
		}
		plain, err := key.Decrypt(sealed)
		if err != nil {
			return nil, fmt.Errorf("get resource %s: %w", uri, err)
		}
		return plain, nil
	}
}

func (c *Client) fetch(ctx context.Context, path string, tok *Token, out any) (int, error) {
	c.mu.Lock()
	c.stats.Fetches++
	c.mu.Unlock()
	return c.do(ctx, "get resource", http.MethodGet, path, nil, func(r *http.Request) {
		if c.cfg.Passport {
			r.Header.Set("Authorization", "Bearer "+tok.Raw)
		}
	}, c.cfg.MaxResourceBytes, out)
}

func (c *Client) postJSON(ctx context.Context, step string, body []byte, out any) error {
	_, err := c.do(ctx, step, http.MethodPost, "/kbs/v0/"+step, body, nil, maxHandshakeBytes, out)
	return err
}

// do sends one protocol request, retrying network errors and 5xx answers
// with backoff until ctx ends, and decodes a 200 answer into out. It returns
// the last HTTP status (0 if none arrived).
func (c *Client) do(ctx context.Context, step, method, path string, body []byte, prepare func(*http.Request), limit int64, out any) (int, error) {
	target := c.base.String() + path
	delay := c.cfg.InitialBackoff
	var prev error // the last failure that was not the deadline itself
	for try := 1; ; try++ {
		status, retry, err := c.once(ctx, step, method, target, path, body, prepare, limit, out)
		if err != nil && ctx.Err() != nil && prev != nil {
			// The deadline cut an attempt short: say what kept failing.
			return status, fmt.Errorf("%w (gave up after %d attempts at the deadline; the previous attempt failed: %v)", err, try, prev)
		}
		if err == nil || !retry {
			return status, err
		}
		prev = err
		// Full jitter in [delay/2, delay).
		wait := delay/2 + rand.N(delay/2+1)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return status, fmt.Errorf("%w (gave up after %d attempts: the deadline leaves no time to retry)", err, try)
		}
		c.log.Debug("KBS request failed; retrying", "step", step, "attempt", try, "wait", wait, "err", err)
		select {
		case <-ctx.Done():
			return status, fmt.Errorf("%w (gave up after %d attempts: %v)", err, try, context.Cause(ctx))
		case <-time.After(wait):
		}
		delay = min(2*delay, c.cfg.MaxBackoff)
	}
}

func (c *Client) once(ctx context.Context, step, method, target, path string, body []byte, prepare func(*http.Request), limit int64, out any) (status int, retry bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, false, c.stepError(step, path, 0, nil, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "guestd-kbs-client/"+protocol.Version)
	if prepare != nil {
		prepare(req)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		// Transport failures are retried unless the caller's context ended
		// or the KBS's certificate was refused: that will not heal.
		return 0, ctx.Err() == nil && !certificateError(err), c.stepError(step, path, 0, nil, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return resp.StatusCode, ctx.Err() == nil, c.stepError(step, path, resp.StatusCode, nil, fmt.Errorf("read response: %w", err))
	}
	if int64(len(data)) > limit {
		return resp.StatusCode, false, c.stepError(step, path, resp.StatusCode, nil, fmt.Errorf("response exceeds %d bytes", limit))
	}
	if resp.StatusCode != http.StatusOK {
		var info *protocol.ErrorInformation
		var ei protocol.ErrorInformation
		if json.Unmarshal(data, &ei) == nil && (ei.Type != "" || ei.Detail != "") {
			info = &ei
		}
		return resp.StatusCode, resp.StatusCode >= 500, c.stepError(step, path, resp.StatusCode, info, nil)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return resp.StatusCode, false, c.stepError(step, path, resp.StatusCode, nil, fmt.Errorf("malformed response: %w", err))
	}
	return resp.StatusCode, false, nil
}

// certificateError reports whether err is a TLS certificate verification
// failure.
func certificateError(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	return errors.As(err, &verr) || errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid)
}

// Error is a failed protocol step.
type Error struct {
	Step   string // "auth", "attest" or "get resource"
	URL    string
	Status int                        // HTTP status, 0 if no answer arrived
	Info   *protocol.ErrorInformation // the KBS's error body, if it sent one
	Err    error                      // the underlying failure, if not an HTTP error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "kbs %s %s", e.Step, e.URL)
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Info != nil {
		if v := e.Info.Variant(); v != "" {
			fmt.Fprintf(&b, " %s", v)
		}
		if e.Info.Detail != "" {
			fmt.Fprintf(&b, ": %s", e.Info.Detail)
		}
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

func (c *Client) stepError(step, path string, status int, info *protocol.ErrorInformation, err error) *Error {
	return &Error{Step: step, URL: c.base.String() + path, Status: status, Info: info, Err: err}
}
