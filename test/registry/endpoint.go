package registry

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// Target is anything clients can push to or pull from: a *Registry or a
// *Proxy.
type Target interface {
	// Addr returns how to reach the target.
	Addr() *Endpoint
}

// Endpoint says how a client reaches a registry (or a proxy in front of
// one). All fields are set once by Start, Corrupting or Substituting and must
// not be changed.
type Endpoint struct {
	// Host is "127.0.0.1:PORT", the registry part of image references.
	Host string
	// URL is "http://Host" or "https://Host".
	URL string
	// CAPEM is the PEM of the CA that issued the server certificate; nil
	// for plain HTTP.
	CAPEM []byte
	// CAFile is a file holding CAPEM (for SSL_CERT_FILE, --cacert, ...);
	// "" for plain HTTP.
	CAFile string
	// CertDir is a directory holding ca.crt, usable as skopeo's
	// --src-cert-dir/--dest-cert-dir or a containers certs.d host dir; ""
	// for plain HTTP.
	CertDir string
	// User and Password are the credentials of the first htpasswd (or
	// token server) user in sorted order; both "" when the registry is
	// anonymous.
	User, Password string

	client *http.Client
	tokens *TokenServer // set when the registry takes bearer tokens
}

// Addr returns e itself; it makes *Registry and *Proxy Targets.
func (e *Endpoint) Addr() *Endpoint { return e }

// TLS reports whether the endpoint speaks HTTPS.
func (e *Endpoint) TLS() bool { return e.CAPEM != nil }

// Client returns an HTTP client that trusts the endpoint's CA. It does not
// add credentials; use SetAuth on requests.
func (e *Endpoint) Client() *http.Client { return e.client }

// SetAuth adds the endpoint's credentials to req, if it has any: basic
// auth, or for a token-auth registry a bearer token fetched for User with
// the scope the request needs (pull for GET/HEAD, pull,push for uploads,
// delete for DELETE). If the token server refuses, req is left without
// credentials and the registry answers 401.
func (e *Endpoint) SetAuth(req *http.Request) {
	switch {
	case e.User == "":
	case e.tokens != nil:
		e.tokens.setBearer(req, e.User, e.Password)
	default:
		req.SetBasicAuth(e.User, e.Password)
	}
}

// AuthJSON writes a containers auth.json ({"auths":{HOST:{"auth":...}}})
// with the endpoint's credentials into a temp dir and returns its path. An
// anonymous endpoint gets an auth.json with no entries.
func (e *Endpoint) AuthJSON(t testing.TB) string {
	t.Helper()
	if e.User == "" {
		return WriteAuthJSON(t, nil)
	}
	return WriteAuthJSON(t, map[string][2]string{e.Host: {e.User, e.Password}})
}

// SkopeoFlags returns the skopeo flags that reach this endpoint as the
// source ("src") or destination ("dest") of a copy, or ("") for the
// one-image commands (inspect, delete, list-tags): TLS verification off for
// plain HTTP, the cert dir for TLS, and the credentials if any.
func (e *Endpoint) SkopeoFlags(side string) []string {
	prefix := "--"
	if side != "" {
		prefix += side + "-"
	}
	var f []string
	if e.TLS() {
		f = append(f, prefix+"cert-dir", e.CertDir)
	} else {
		f = append(f, prefix+"tls-verify=false")
	}
	if e.User != "" {
		f = append(f, prefix+"creds", e.User+":"+e.Password)
	}
	return f
}

// WriteAuthJSON writes an auth.json mapping each host (or host/repo) to
// its {user, password} into a temp dir and returns its path.
func WriteAuthJSON(t testing.TB, creds map[string][2]string) string {
	t.Helper()
	type entry struct {
		Auth string `json:"auth"`
	}
	auths := map[string]entry{}
	for host, up := range creds {
		auths[host] = entry{Auth: base64.StdEncoding.EncodeToString([]byte(up[0] + ":" + up[1]))}
	}
	b, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatalf("encode auth.json: %v", err)
	}
	p := filepath.Join(t.TempDir(), "auth.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatalf("write auth.json %s: %v", p, err)
	}
	return p
}

// newClient returns an HTTP client trusting caPEM (if any) on top of nothing
// else: test registries never have publicly trusted certificates.
func newClient(caPEM []byte) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // loopback only; never go through an environment proxy
	if caPEM != nil {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(caPEM)
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr}
}
