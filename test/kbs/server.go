package kbs

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/guestd/guestd/kbc/protocol"
)

// Defaults of Config.
const (
	DefaultSessionTimeout = 5 * time.Minute
	DefaultTokenLifetime  = 5 * time.Minute
	DefaultMaxBodyBytes   = 2 << 20 // trustee's payload_request_size = 2 (MiB)
)

// PathPrefix starts every KBS API path.
const PathPrefix = "/kbs/v0/"

// Config configures a Server. The zero value is a KBS that hands out
// challenges to nobody (no verifiers), releases nothing and has no admin.
type Config struct {
	// RepoDir holds the resources as files <RepoDir>/<repo>/<type>/<tag>.
	// Empty: no repository; every resource request fails.
	RepoDir string
	// Policy is the resource policy; nil denies everything, as trustee's
	// default policy denies the sample TEE.
	Policy *Policy
	// AdminKey verifies the EdDSA admin tokens; nil disables the admin API
	// (every admin request fails 401).
	AdminKey ed25519.PublicKey
	// Verifiers verify evidence by TEE name (the protocol's spelling). /auth
	// for a TEE without one fails 401.
	Verifiers map[string]Verifier
	// HashAlgorithm, if set, is announced in every challenge as
	// {"selected-hash-algorithm": ...} and used for the binding digest.
	// Empty: the challenge's extra-params is "" and the digest is SHA-384,
	// as trustee does for every TEE but IBM SE.
	HashAlgorithm protocol.HashAlgorithm
	// SessionTimeout is how long an RCAR session lives (default 5 min).
	SessionTimeout time.Duration
	// TokenLifetime is how long an attestation token lives (default 5 min).
	TokenLifetime time.Duration
	// Now is the clock (default time.Now); tests move it to expire sessions
	// and tokens.
	Now func() time.Time
	// Logger receives one line per failed request and per admin change.
	// Secrets (resources, keys, tokens, session ids) are never logged.
	// Default: discard.
	Logger *slog.Logger
	// MaxBodyBytes bounds request bodies (default 2 MiB, as trustee).
	MaxBodyBytes int64
}

// Server is a KBS speaking protocol 0.4.0 as trustee does. It is an
// http.Handler; all its state (sessions, policy, signing key, counters)
// lives in it. It starts no goroutines.
type Server struct {
	cfg       Config
	log       *slog.Logger
	key       *tokenKey
	policy    atomic.Pointer[Policy]
	sessions  sessions
	verifiers map[string]Verifier
	stats     counters
}

// New returns a Server for cfg, with a fresh ephemeral token signing key.
func New(cfg Config) (*Server, error) {
	if cfg.SessionTimeout < 0 || cfg.TokenLifetime < 0 || cfg.MaxBodyBytes < 0 {
		return nil, errors.New("new KBS: negative timeout, lifetime or body limit")
	}
	if cfg.SessionTimeout == 0 {
		cfg.SessionTimeout = DefaultSessionTimeout
	}
	if cfg.TokenLifetime == 0 {
		cfg.TokenLifetime = DefaultTokenLifetime
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HashAlgorithm != "" {
		h, err := protocol.ParseHashAlgorithm(string(cfg.HashAlgorithm))
		if err != nil {
			return nil, fmt.Errorf("new KBS: %w", err)
		}
		cfg.HashAlgorithm = h
	}
	if cfg.AdminKey != nil && len(cfg.AdminKey) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("new KBS: admin key is %d bytes, want %d", len(cfg.AdminKey), ed25519.PublicKeySize)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key, err := newTokenKey()
	if err != nil {
		return nil, fmt.Errorf("new KBS: %w", err)
	}
	s := &Server{cfg: cfg, log: log, key: key, verifiers: make(map[string]Verifier, len(cfg.Verifiers))}
	for tee, v := range cfg.Verifiers {
		if v == nil {
			return nil, fmt.Errorf("new KBS: verifier for TEE %q is nil", tee)
		}
		s.verifiers[tee] = v
	}
	s.SetPolicy(cfg.Policy)
	return s, nil
}

// SetPolicy replaces the resource policy; nil denies everything.
func (s *Server) SetPolicy(p *Policy) {
	if p == nil {
		p = DenyAll()
	}
	s.policy.Store(p)
}

// Policy returns the resource policy in force.
func (s *Server) Policy() *Policy { return s.policy.Load() }

// ServeHTTP routes a request as trustee's API server does: everything under
// /kbs/v0/ with GET, POST, PUT or DELETE, dispatched on the first path
// segment, plus GET /healthz.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/healthz" {
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	// Match /kbs/v0/ on decoded segments, as actix matches its routes.
	segments, err := splitPath(r.URL.EscapedPath())
	if err != nil || len(segments) < 4 || segments[0] != "" || segments[1] != "kbs" || segments[2] != "v0" {
		w.WriteHeader(http.StatusNotFound) // actix's default: no body
		return
	}
	segments = segments[3:]
	switch r.Method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete:
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	body, status := s.readBody(w, r)
	if status != 0 {
		s.log.Info("request rejected", "method", r.Method, "path", r.URL.Path, "status", status)
		if status == http.StatusRequestEntityTooLarge {
			// actix answers an oversized payload itself, before trustee's
			// handler runs: 413 with its own plain-text message.
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, "Payload reached size limit.")
			return
		}
		w.WriteHeader(status)
		return
	}
	query, err := lastValues(r.URL.RawQuery)
	if err != nil {
		// actix's Query extractor fails before the handler: 400.
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, "Query deserialize error: "+err.Error())
		return
	}
	plugin, rest := segments[0], segments[1:]
	var kerr *kbsError
	switch {
	case plugin == "auth" && r.Method == http.MethodPost:
		kerr = s.auth(w, body)
	case plugin == "attest" && r.Method == http.MethodPost:
		kerr = s.attest(w, r, body)
	case plugin == "resource-policy" && r.Method == http.MethodPost:
		kerr = s.setPolicy(w, r, body)
	case plugin == "resource-policy" && r.Method == http.MethodGet:
		kerr = s.getPolicy(w, r)
	case plugin == "resource" && (r.Method == http.MethodPost || r.Method == http.MethodDelete):
		kerr = s.adminResource(w, r, body, rest)
	case plugin == "resource":
		kerr = s.resource(w, r, rest, query)
	default:
		kerr = errPluginNotFound(plugin)
	}
	if kerr != nil {
		s.log.Info("request failed", "method", r.Method, "path", r.URL.Path,
			"status", kerr.status, "error", kerr.variant, "detail", kerr.detail)
		kerr.write(w)
	}
}

// readBody reads the whole body up to MaxBodyBytes. A non-zero status means
// the request is to be refused with it.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, int) {
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return nil, http.StatusRequestEntityTooLarge
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusRequestEntityTooLarge
		}
		return nil, http.StatusBadRequest
	}
	return body, 0
}

// splitPath splits an escaped path into unescaped segments. As actix does not decode %2F, a segment never splits further;
// here an encoded "/" stays inside its segment, which then fails the
// resource path rule.
func splitPath(escaped string) ([]string, error) {
	parts := strings.Split(escaped, "/")
	for i, p := range parts {
		u, err := url.PathUnescape(p)
		if err != nil {
			return nil, fmt.Errorf("path segment %q: %w", p, err)
		}
		parts[i] = u
	}
	return parts, nil
}

// lastValues parses a query string into a map, the last value of a
// repeated parameter winning (serde_urlencoded into a HashMap).
func lastValues(raw string) (map[string]string, error) {
	v, err := url.ParseQuery(raw)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(v))
	for k, vals := range v {
		out[k] = vals[len(vals)-1]
	}
	return out, nil
}

// writeJSON answers 200 with v as compact JSON (no HTML escaping, as serde),
// setting the cookie first if one is given.
func writeJSON(w http.ResponseWriter, v any, c *http.Cookie) *kbsError {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return newError(http.StatusUnauthorized, "SerdeError", "Serialize/Deserialize failed: %v", err)
	}
	if c != nil {
		http.SetCookie(w, c)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(bytes.TrimRight(buf.Bytes(), "\n"))
	return nil
}

// Stats are counters of what a Server did.
type Stats struct {
	Auth           int64 // challenges issued
	AuthFailed     int64 // /auth refused
	Attest         int64 // attestation tokens issued (evidence verified)
	AttestReused   int64 // /attest on an attested session (stored token returned)
	AttestFailed   int64 // /attest refused
	ResourceGets   int64 // resources released
	ResourceFailed int64 // resource requests refused, policy denials included
	PolicyDenied   int64 // resource requests the policy denied
	AdminWrites    int64 // resources written through the admin API
	AdminDeletes   int64 // resources deleted through the admin API
	AdminFailed    int64 // admin requests refused
	Sessions       int   // live sessions (expired ones not yet swept included)
}

type counters struct {
	auth, authFailed                     atomic.Int64
	attest, attestReused, attestFailed   atomic.Int64
	resourceGets, resourceFailed, denied atomic.Int64
	adminWrites, adminDeletes            atomic.Int64
	adminFailed                          atomic.Int64
}

// Stats returns a snapshot of the counters. It is safe to call at any time.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Auth: c.auth.Load(), AuthFailed: c.authFailed.Load(),
		Attest: c.attest.Load(), AttestReused: c.attestReused.Load(), AttestFailed: c.attestFailed.Load(),
		ResourceGets: c.resourceGets.Load(), ResourceFailed: c.resourceFailed.Load(), PolicyDenied: c.denied.Load(),
		AdminWrites: c.adminWrites.Load(), AdminDeletes: c.adminDeletes.Load(), AdminFailed: c.adminFailed.Load(),
		Sessions: s.sessions.len(),
	}
}
