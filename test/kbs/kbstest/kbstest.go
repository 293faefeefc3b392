package kbstest

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"testing"
	"time"

	kbsclient "github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/test/kbs"
)

// Instance is a running test KBS.
type Instance struct {
	// URL is the base URL, e.g. http://127.0.0.1:41234 (no trailing slash).
	URL string
	// Server is the KBS, for Stats, SetPolicy and the like.
	Server *kbs.Server
	// HTTP is the underlying httptest server.
	HTTP *httptest.Server
	// CAPEM is the PEM of the CA that issued the server certificate (TLS
	// instances only; nil otherwise).
	CAPEM []byte

	pool *x509.CertPool
}

// Start serves a KBS for cfg over HTTP on 127.0.0.1 and closes it when the
// test ends.
func Start(t testing.TB, cfg kbs.Config) *Instance {
	t.Helper()
	srv := newServer(t, cfg)
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &Instance{URL: hs.URL, Server: srv, HTTP: hs}
}

// StartTLS serves a KBS for cfg over HTTPS on 127.0.0.1, with a certificate
// for 127.0.0.1, ::1 and localhost issued by a fresh CA (see CAPEM), and
// closes it when the test ends.
func StartTLS(t testing.TB, cfg kbs.Config) *Instance {
	t.Helper()
	srv := newServer(t, cfg)
	caPEM, leaf, pool := newCA(t)
	hs := httptest.NewUnstartedServer(srv)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{leaf}, MinVersion: tls.VersionTLS12}
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return &Instance{URL: hs.URL, Server: srv, HTTP: hs, CAPEM: caPEM, pool: pool}
}

func newServer(t testing.TB, cfg kbs.Config) *kbs.Server {
	t.Helper()
	srv, err := kbs.New(cfg)
	if err != nil {
		t.Fatalf("kbstest: %v", err)
	}
	return srv
}

// Close stops the server now (it is also stopped when the test ends).
func (i *Instance) Close() { i.HTTP.Close() }

// Client returns a new HTTP client for the instance, with its own cookie
// jar and, for TLS instances, trusting only the test CA.
func (i *Instance) Client(t testing.TB) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("kbstest: cookie jar: %v", err)
	}
	tr := &http.Transport{}
	if i.pool != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: i.pool, MinVersion: tls.VersionTLS12}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Jar: jar, Timeout: 30 * time.Second}
}

// NewAdminKey returns a fresh Ed25519 admin key pair: the public half goes
// into kbs.Config.AdminKey, the private half into AdminToken.
func NewAdminKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatalf("kbstest: admin key: %v", err)
	}
	return pub, priv
}

// AdminToken mints an admin token valid for lifetime from now, as trustee's
// tooling does (see kbs.MintAdminToken).
func AdminToken(t testing.TB, priv ed25519.PrivateKey, lifetime time.Duration) string {
	t.Helper()
	tok, err := kbs.MintAdminToken(priv, time.Now(), lifetime)
	if err != nil {
		t.Fatalf("kbstest: %v", err)
	}
	return tok
}

// SetResource stores data as the resource uri through the instance's admin
// API (with a token signed by admin), as a tenant registers a secret.
func (i *Instance) SetResource(t testing.TB, admin ed25519.PrivateKey, uri string, data []byte) {
	t.Helper()
	c, u := i.admin(t, admin, uri)
	if err := c.SetResource(context.Background(), u, data); err != nil {
		t.Fatalf("kbstest: %v", err)
	}
}

// DeleteResource deletes the resource uri through the admin API.
func (i *Instance) DeleteResource(t testing.TB, admin ed25519.PrivateKey, uri string) {
	t.Helper()
	c, u := i.admin(t, admin, uri)
	if err := c.DeleteResource(context.Background(), u); err != nil {
		t.Fatalf("kbstest: %v", err)
	}
}

func (i *Instance) admin(t testing.TB, admin ed25519.PrivateKey, uri string) (*kbsclient.Admin, resource.URI) {
	t.Helper()
	c, err := kbsclient.NewAdmin(i.URL, admin, i.CAPEM)
	if err != nil {
		t.Fatalf("kbstest: %v", err)
	}
	u, err := resource.Parse(uri)
	if err != nil {
		t.Fatalf("kbstest: %v", err)
	}
	return c, u
}

// newCA makes a P-256 CA and a server certificate it issues, valid for an
// hour around now.
func newCA(t testing.TB) (caPEM []byte, leaf tls.Certificate, pool *x509.CertPool) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("kbstest: CA key: %v", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "guestd kbstest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatalf("kbstest: CA certificate: %v", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatalf("kbstest: CA certificate: %v", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("kbstest: server key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: "guestd kbstest KBS"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatalf("kbstest: server certificate: %v", err)
	}
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	leaf = tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), leaf, pool
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatalf("kbstest: serial: %v", err)
	}
	return n
}
