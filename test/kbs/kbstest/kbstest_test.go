package kbstest_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	"github.com/guestd/guestd/test/kbs/verifier/sample"
)

func cfg(t *testing.T, admin ed25519.PublicKey) kbs.Config {
	return kbs.Config{
		RepoDir:   t.TempDir(),
		Policy:    kbs.AllowAll(),
		AdminKey:  admin,
		Verifiers: map[string]kbs.Verifier{"sample": sample.New()},
	}
}

func post(t *testing.T, c *http.Client, u string, body []byte, header map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("POST", u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, b
}

func TestStart(t *testing.T) {
	pub, priv := kbstest.NewAdminKey(t)
	c := cfg(t, pub)
	inst := kbstest.Start(t, c)
	u, err := url.Parse(inst.URL)
	if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "" || inst.CAPEM != nil {
		t.Fatalf("URL %q, CAPEM %v", inst.URL, inst.CAPEM != nil)
	}
	client := inst.Client(t)

	// The admin token kbstest mints is accepted by the server.
	res, b := post(t, client, inst.URL+"/kbs/v0/resource/default/key/k", []byte("v"),
		map[string]string{"Authorization": "Bearer " + kbstest.AdminToken(t, priv, time.Hour)})
	if res.StatusCode != http.StatusOK {
		t.Fatalf("admin write: %d %s", res.StatusCode, b)
	}
	if got, err := os.ReadFile(filepath.Join(c.RepoDir, "default", "key", "k")); err != nil || string(got) != "v" {
		t.Errorf("stored %q, %v", got, err)
	}
	if inst.Server.Stats().AdminWrites != 1 {
		t.Errorf("stats %+v", inst.Server.Stats())
	}

	// The client keeps the session cookie for /attest.
	res, b = post(t, client, inst.URL+"/kbs/v0/auth", []byte(`{"version":"0.4.0","tee":"sample","extra-params":{}}`), nil)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("auth: %d %s", res.StatusCode, b)
	}
	// No Path attribute (as trustee): the cookie's default path is /kbs/v0.
	attestURL, err := url.Parse(inst.URL + "/kbs/v0/attest")
	if err != nil {
		t.Fatal(err)
	}
	if cookies := client.Jar.Cookies(attestURL); len(cookies) != 1 || cookies[0].Name != kbs.SessionCookie {
		t.Errorf("jar cookies = %v", cookies)
	}
	res, b = post(t, client, inst.URL+"/kbs/v0/attest", []byte(`{}`), nil)
	var info protocol.ErrorInformation
	if err := json.Unmarshal(b, &info); err != nil || res.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(info.Detail, "missing field `runtime-data`") {
		t.Errorf("attest with the jar's cookie: %d %s (want the session found and the body refused)", res.StatusCode, b)
	}

	inst.Close()
	if _, err := client.Get(inst.URL + "/healthz"); err == nil {
		t.Error("server still answers after Close")
	}
}

func TestStartTLS(t *testing.T) {
	inst := kbstest.StartTLS(t, cfg(t, nil))
	if !strings.HasPrefix(inst.URL, "https://127.0.0.1:") {
		t.Fatalf("URL = %q", inst.URL)
	}
	block, _ := pem.Decode(inst.CAPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("CAPEM is not a PEM certificate")
	}
	ca, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !ca.IsCA {
		t.Fatalf("CA: %v, IsCA %v", err, ca != nil && ca.IsCA)
	}

	res, err := inst.Client(t).Get(inst.URL + "/healthz")
	if err != nil {
		t.Fatalf("client trusting the CA: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("healthz: %d", res.StatusCode)
	}

	// A client built from CAPEM alone (as the guest's kbs_cert) verifies
	// the server, also under the name localhost.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(inst.CAPEM) {
		t.Fatal("CAPEM not accepted by a cert pool")
	}
	for _, host := range []string{"127.0.0.1", "localhost"} {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: host}}}
		res, err := c.Get(inst.URL + "/healthz")
		if err != nil {
			t.Errorf("server name %s: %v", host, err)
			continue
		}
		res.Body.Close()
		c.CloseIdleConnections()
	}

	// Without the CA the certificate is not trusted.
	c := &http.Client{Transport: &http.Transport{}}
	if _, err := c.Get(inst.URL + "/healthz"); err == nil {
		t.Error("a client without the test CA trusted the server")
	}
	c.CloseIdleConnections()

	// Two instances have different CAs.
	other := kbstest.StartTLS(t, cfg(t, nil))
	if bytes.Equal(other.CAPEM, inst.CAPEM) {
		t.Error("two instances share a CA")
	}
}

func TestAdminToken(t *testing.T) {
	pub, priv := kbstest.NewAdminKey(t)
	if len(pub) != ed25519.PublicKeySize || len(priv) != ed25519.PrivateKeySize {
		t.Fatalf("key sizes %d, %d", len(pub), len(priv))
	}
	tok := kbstest.AdminToken(t, priv, 2*time.Hour)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q", tok)
	}
	var hdr, claims map[string]any
	for i, dst := range []*map[string]any{&hdr, &claims} {
		b, err := base64URLDecode(parts[i])
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, dst); err != nil {
			t.Fatal(err)
		}
	}
	if hdr["alg"] != "EdDSA" || hdr["typ"] != "JWT" || len(hdr) != 2 {
		t.Errorf("header = %v, want {alg: EdDSA, typ: JWT}", hdr)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if exp-iat != 7200 || claims["role"] != kbs.AdminRole {
		t.Errorf("claims = %v", claims)
	}
	sig, err := base64URLDecode(parts[2])
	if err != nil || !ed25519.Verify(pub, []byte(parts[0]+"."+parts[1]), sig) {
		t.Errorf("signature does not verify: %v", err)
	}
}

func base64URLDecode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
