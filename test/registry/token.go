package registry

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// TokenService is the service name of every token server: the
	// registry's challenges carry it, clients send it back, and tokens
	// carry it as their audience.
	TokenService = "guestd-test-registry"
	// TokenIssuer is the issuer (iss claim) of every token; the registry
	// trusts no other.
	TokenIssuer = "guestd-test-token-issuer"
	// TokenTTL is how long a token is valid (its expires_in).
	TokenTTL = 300 * time.Second
	// tokenRealm is the Basic realm of the token server's 401 answers.
	tokenRealm = "guestd-test-token"
)

// TokenServer is an in-process Docker registry token server, the bearer
// token flow of Docker Hub, quay.io and ghcr.io ("Docker Registry v2
// authentication via central service"), in front of which Start puts the
// registry when Options.Token is set.
//
// A client that the registry answers 401 with
//
//	WWW-Authenticate: Bearer realm="<Realm>",service="<Service>",scope="repository:<name>:pull"
//
// asks GET <Realm>?service=<Service>&scope=repository:<name>:pull,push
// (any number of scope parameters, each possibly several space-separated
// scopes), with HTTP basic credentials or anonymously, and gets
// {"token","access_token","expires_in","issued_at"}. The token is a JWT
// (ES256) that distribution 2.8's token access controller verifies: its
// header carries in x5c a leaf certificate issued by the token root
// certificate (RootPEM, the registry's rootcertbundle); its claims are iss
// Issuer, sub the user ("" anonymous), aud Service, exp/nbf/iat, a random
// jti, and access, the granted scopes.
//
// A known user with the right password is granted what it asks for among
// the pull, push, delete and * actions on repositories, and * on the
// registry catalog. Anonymous requests get a token granting nothing: it
// passes the registry's /v2/ check and nothing else. Wrong or unknown
// credentials get 401 with a Basic challenge and no token. Only GET (and
// HEAD) are served; the OAuth2 POST form is not (c/image never uses it).
type TokenServer struct {
	// URL is "http(s)://127.0.0.1:PORT"; HTTPS, with the registry's server
	// certificate, when the registry serves TLS.
	URL string
	// Realm is URL + "/token", the realm of the registry's challenges.
	Realm string
	// Service is TokenService; Issuer is TokenIssuer.
	Service, Issuer string
	// RootPEM is the token-signing root certificate, the registry's
	// rootcertbundle, and RootFile the file holding it.
	RootPEM  []byte
	RootFile string

	users   map[string]string
	pki     *tokenPKI
	signer  *tokenSigner
	srv     *httptest.Server
	client  *http.Client
	refused atomic.Int64
	mu      sync.Mutex
	grants  []Grant
}

// Access is one entry of a token's access claim: actions granted on a typed,
// named resource.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Grant records one token the server issued.
type Grant struct {
	// User is the authenticated user, "" for an anonymous request.
	User string
	// Scopes are the scopes asked for, one per element.
	Scopes []string
	// Access is what the token grants (empty for anonymous requests).
	Access []Access
}

// Grants returns every token issued so far, in order.
func (s *TokenServer) Grants() []Grant {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.grants)
}

// Refused returns how many requests the server has answered 401 (wrong or
// unknown credentials).
func (s *TokenServer) Refused() int { return int(s.refused.Load()) }

// Fetch asks the server for a token for scopes ("repository:NAME:pull,push")
// as a client would: with basic credentials unless user is "". It returns
// the token and the HTTP status; err is set for a transport error, an
// undecodable answer, or any status but 200 (with the server's message).
func (s *TokenServer) Fetch(user, password string, scopes ...string) (token string, status int, err error) {
	q := url.Values{"service": {s.Service}}
	if len(scopes) > 0 {
		q["scope"] = scopes
	}
	if user != "" {
		q.Set("account", user)
	}
	req, err := http.NewRequest(http.MethodGet, s.Realm+"?"+q.Encode(), nil)
	if err != nil {
		return "", 0, err
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", resp.StatusCode, fmt.Errorf("token request: read answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", resp.StatusCode, fmt.Errorf("token request: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.Token == "" {
		return "", resp.StatusCode, fmt.Errorf("token request: bad answer %q (%v)", body, err)
	}
	return tr.Token, resp.StatusCode, nil
}

// tokenResponse is the token server's answer.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// tokenClaims are the JWT claims distribution's token.ClaimSet reads.
type tokenClaims struct {
	Issuer     string   `json:"iss"`
	Subject    string   `json:"sub"`
	Audience   string   `json:"aud"`
	Expiration int64    `json:"exp"`
	NotBefore  int64    `json:"nbf"`
	IssuedAt   int64    `json:"iat"`
	JWTID      string   `json:"jti"`
	Access     []Access `json:"access"`
}

// tokenHeader is the JOSE header distribution's token.Header reads: the
// signing key is found through x5c (a certificate chain to the
// rootcertbundle) or else kid (the libtrust key ID of a bundle
// certificate's key).
type tokenHeader struct {
	Type      string   `json:"typ"`
	Algorithm string   `json:"alg"`
	KeyID     string   `json:"kid,omitempty"`
	X5c       []string `json:"x5c,omitempty"`
}

// tokenSigner signs JWTs with an ECDSA P-256 key (ES256).
type tokenSigner struct {
	key *ecdsa.PrivateKey
	x5c []string // base64 (standard, padded) DER certificates, leaf first
	kid string   // used when x5c is empty
}

// sign returns the compact JWS of claims.
func (s *tokenSigner) sign(claims tokenClaims) (string, error) {
	if claims.Access == nil {
		claims.Access = []Access{}
	}
	h := tokenHeader{Type: "JWT", Algorithm: "ES256", X5c: s.x5c}
	if len(s.x5c) == 0 {
		h.KeyID = s.kid // distribution looks at kid only without x5c
	}
	hdr, err := json.Marshal(h)
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	signing := joseEncode(hdr) + "." + joseEncode(body)
	sum := sha256.Sum256([]byte(signing))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	// JWS ES256: R and S as 32-byte big-endian integers, concatenated
	// (libtrust checks the length is exactly 64).
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return signing + "." + joseEncode(sig), nil
}

// joseEncode is base64url without padding.
func joseEncode(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// libtrustKeyID is the key ID distribution computes for a rootcertbundle
// certificate's key (libtrust's keyIDFromCryptoKey): SHA-256 of the PKIX
// DER public key, truncated to 240 bits, base32 in 12 groups of 4 joined
// by ':'.
func libtrustKeyID(pub any) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	groups := make([]string, 0, len(s)/4)
	for len(s) > 4 {
		groups = append(groups, s[:4])
		s = s[4:]
	}
	return strings.Join(append(groups, s), ":"), nil
}

// tokenPKI is a token-signing root (the rootcertbundle) and a leaf signing
// certificate it issued.
type tokenPKI struct {
	rootKey  *ecdsa.PrivateKey
	rootDER  []byte
	leafKey  *ecdsa.PrivateKey
	leafDER  []byte
	rootCert *x509.Certificate
}

// newTokenPKI makes a self-signed token root CA and a signing certificate
// under it, both P-256.
func newTokenPKI(name string) (*tokenPKI, error) {
	now := time.Now()
	p := &tokenPKI{}
	var err error
	if p.rootKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generate token root key: %w", err)
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name + " root"},
		NotBefore:             now.Add(-24 * time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	if p.rootDER, err = x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &p.rootKey.PublicKey, p.rootKey); err != nil {
		return nil, fmt.Errorf("create token root certificate: %w", err)
	}
	if p.rootCert, err = x509.ParseCertificate(p.rootDER); err != nil {
		return nil, fmt.Errorf("parse token root certificate: %w", err)
	}
	if p.leafKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("generate token signing key: %w", err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: name + " signer"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if p.leafDER, err = x509.CreateCertificate(rand.Reader, leafTmpl, p.rootCert, &p.leafKey.PublicKey, p.rootKey); err != nil {
		return nil, fmt.Errorf("create token signing certificate: %w", err)
	}
	return p, nil
}

// leafSigner signs with the leaf key and carries the leaf in x5c.
func (p *tokenPKI) leafSigner() *tokenSigner {
	return &tokenSigner{key: p.leafKey, x5c: []string{base64.StdEncoding.EncodeToString(p.leafDER)}}
}

// rootSigner signs with the root key itself, identified by its libtrust
// key ID in kid.
func (p *tokenPKI) rootSigner() (*tokenSigner, error) {
	kid, err := libtrustKeyID(&p.rootKey.PublicKey)
	if err != nil {
		return nil, err
	}
	return &tokenSigner{key: p.rootKey, kid: kid}, nil
}

func randomSerial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120)) // crypto/rand never fails
	return n.Add(n, big.NewInt(1))
}

// startTokenServer starts a token server for users, serving TLS with pair
// when it is not nil (clients then trust it through caPEM), with its root
// certificate written under dir. It stops when the test ends.
func startTokenServer(t testing.TB, dir string, users map[string]string, pair *tls.Certificate, caPEM []byte) *TokenServer {
	t.Helper()
	p, err := newTokenPKI("guestd test token")
	if err != nil {
		t.Fatalf("token server: %v", err)
	}
	s := &TokenServer{
		Service:  TokenService,
		Issuer:   TokenIssuer,
		RootPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.rootDER}),
		RootFile: filepath.Join(dir, "token-root.pem"),
		users:    users,
		pki:      p,
		signer:   p.leafSigner(),
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("token server: %v", err)
	}
	if err := os.WriteFile(s.RootFile, s.RootPEM, 0o644); err != nil {
		t.Fatalf("token server: write %s: %v", s.RootFile, err)
	}
	s.srv = httptest.NewUnstartedServer(s)
	if pair != nil {
		s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*pair}, MinVersion: tls.VersionTLS12}
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	s.URL = "http://" + s.srv.Listener.Addr().String()
	if pair != nil {
		s.URL = "https://" + s.srv.Listener.Addr().String()
	}
	s.Realm = s.URL + "/token"
	s.client = newClient(caPEM)
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// authYAML is the registry's auth section for this server.
func (s *TokenServer) authYAML() string {
	return fmt.Sprintf("auth:\n  token:\n    realm: %q\n    service: %q\n    issuer: %q\n    rootcertbundle: %q\n",
		s.Realm, s.Service, s.Issuer, s.RootFile)
}

// ServeHTTP implements the token endpoint.
func (s *TokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/token" {
		tokenError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint: "+r.URL.Path)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		tokenError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "only GET is supported")
		return
	}
	q := r.URL.Query()
	if svc := q.Get("service"); svc != s.Service {
		tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", fmt.Sprintf("unknown service %q, want %q", svc, s.Service))
		return
	}
	user := ""
	if r.Header.Get("Authorization") != "" {
		u, pw, ok := r.BasicAuth()
		want, known := s.users[u]
		// Compare even for unknown users so that timing says nothing.
		match := subtle.ConstantTimeCompare([]byte(pw), []byte(want)) == 1
		if !ok || !known || !match {
			s.refused.Add(1)
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", tokenRealm))
			tokenError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid username or password")
			return
		}
		user = u
	}
	var scopes []string
	for _, v := range q["scope"] {
		scopes = append(scopes, strings.Fields(v)...)
	}
	access := []Access{}
	for _, sc := range scopes {
		a, err := parseScope(sc)
		if err != nil {
			tokenError(w, http.StatusBadRequest, "INVALID_REQUEST", err.Error())
			return
		}
		if user == "" {
			continue // anonymous: nothing is granted
		}
		if a = allowed(a); len(a.Actions) > 0 {
			access = append(access, a)
		}
	}
	now := time.Now()
	jti := make([]byte, 16)
	_, _ = rand.Read(jti)
	tok, err := s.signer.sign(tokenClaims{
		Issuer:     s.Issuer,
		Subject:    user,
		Audience:   s.Service,
		Expiration: now.Add(TokenTTL).Unix(),
		NotBefore:  now.Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      hex.EncodeToString(jti),
		Access:     access,
	})
	if err != nil {
		tokenError(w, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	s.mu.Lock()
	s.grants = append(s.grants, Grant{User: user, Scopes: scopes, Access: access})
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(tokenResponse{
		Token:       tok,
		AccessToken: tok,
		ExpiresIn:   int(TokenTTL / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	})
}

// tokenError answers with the registry's JSON error shape.
func tokenError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// parseScope parses "type[(class)]:name:action[,action...]", splitting on
// the first and the last ':'; the class is dropped, as distribution's
// access check ignores it.
func parseScope(sc string) (Access, error) {
	i, j := strings.Index(sc, ":"), strings.LastIndex(sc, ":")
	if i <= 0 || j == i || j == i+1 {
		return Access{}, fmt.Errorf("malformed scope %q", sc)
	}
	typ := sc[:i]
	if k := strings.Index(typ, "("); k >= 0 {
		typ = typ[:k] // a resource class, e.g. repository(plugin)
	}
	a := Access{Type: typ, Name: sc[i+1 : j]}
	for _, act := range strings.Split(sc[j+1:], ",") {
		if act != "" && !slices.Contains(a.Actions, act) {
			a.Actions = append(a.Actions, act)
		}
	}
	return a, nil
}

// allowed keeps the actions an authenticated user may have on a.
func allowed(a Access) Access {
	var ok []string
	switch {
	case a.Type == "repository":
		ok = []string{"pull", "push", "delete", "*"}
	case a.Type == "registry" && a.Name == "catalog":
		ok = []string{"*"}
	}
	kept := Access{Type: a.Type, Name: a.Name, Actions: []string{}}
	for _, act := range a.Actions {
		if slices.Contains(ok, act) {
			kept.Actions = append(kept.Actions, act)
		}
	}
	return kept
}

// requestScopes returns the scopes the registry checks for a request:
// pull for GET and HEAD, delete for DELETE, pull and push for uploads and
// manifest PUTs (plus pull on the source of a cross-repository mount),
// registry:catalog:* for the catalog, and none for /v2/.
func requestScopes(req *http.Request) []string {
	p, ok := strings.CutPrefix(req.URL.Path, "/v2/")
	if !ok || p == "" {
		return nil
	}
	if p == "_catalog" {
		return []string{"registry:catalog:*"}
	}
	cut := -1
	for _, m := range []string{"/manifests/", "/blobs/", "/tags/"} {
		if i := strings.Index(p, m); i > 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut < 0 {
		return nil
	}
	actions := "pull,push"
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		actions = "pull"
	case http.MethodDelete:
		actions = "delete"
	}
	scopes := []string{"repository:" + p[:cut] + ":" + actions}
	if q := req.URL.Query(); q.Get("mount") != "" && q.Get("from") != "" {
		scopes = append(scopes, "repository:"+q.Get("from")+":pull")
	}
	return scopes
}

// setBearer fetches a token for what req needs as user and sets it on
// req. On failure req is left without credentials: the registry then
// answers 401, which is what the caller sees.
func (s *TokenServer) setBearer(req *http.Request, user, password string) {
	tok, _, err := s.Fetch(user, password, requestScopes(req)...)
	if err != nil {
		return
	}
	req.Header.Set("Authorization", "Bearer "+tok)
}

// errNoUsers is Start's complaint about Options.Token without users.
var errNoUsers = errors.New("the Token option needs at least one user in Htpasswd")
