package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestTokenVerification mints tokens by hand and checks that distribution
// 2.8 accepts exactly the well-formed ones: signed by a key that chains to
// the root bundle (x5c) or is a bundle key named by its libtrust key ID
// (kid), from the configured issuer, for the configured service, in their
// validity window, and only for the access they carry.
func TestTokenVerification(t *testing.T) {
	t.Parallel()
	r := Start(t, Options{Token: true, Htpasswd: map[string]string{"u": "p"}})
	s := r.Token
	pki, err := newTokenPKI("foreign")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claims := func(mod func(*tokenClaims)) tokenClaims {
		c := tokenClaims{Issuer: s.Issuer, Subject: "u", Audience: s.Service,
			Expiration: now.Add(time.Minute).Unix(), NotBefore: now.Unix(), IssuedAt: now.Unix(), JWTID: "1",
			Access: []Access{{Type: "repository", Name: "v/blob", Actions: []string{"pull", "push"}}}}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	mint := func(sg *tokenSigner, c tokenClaims) string {
		t.Helper()
		tok, err := sg.sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	do := func(method, url, tok string, body []byte) (*http.Response, string) {
		t.Helper()
		if !strings.HasPrefix(url, "http") {
			url = r.URL + url
		}
		req, err := http.NewRequest(method, url, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}

	// Push a blob with a hand-made token from the server's own signer.
	good := mint(s.signer, claims(nil))
	data := []byte("token-verified blob\n")
	sum := sha256.Sum256(data)
	dgst := "sha256:" + hex.EncodeToString(sum[:])
	resp, body := do(http.MethodPost, "/v2/v/blob/blobs/uploads/", good, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %s %s", resp.Status, body)
	}
	loc := resp.Header.Get("Location")
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	if resp, body := do(http.MethodPut, loc+sep+"digest="+dgst, good, data); resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %s %s", resp.Status, body)
	}
	blob := "/v2/v/blob/blobs/" + dgst

	rootSigner, err := pki.rootSigner()
	if err != nil {
		t.Fatal(err)
	}
	// The bundle's own root key, named by kid rather than x5c.
	ownRoot, err := s.pki.rootSigner()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		tok  string
		want int    // HTTP status
		err  string // the challenge's error, for 401
	}{
		{"server signer (x5c leaf)", good, http.StatusOK, ""},
		{"bundle key by libtrust kid", mint(ownRoot, claims(nil)), http.StatusOK, ""},
		{"unknown kid", mint(rootSigner, claims(nil)), http.StatusUnauthorized, "invalid_token"},
		{"bundle kid, other key", mint(&tokenSigner{key: pki.rootKey, kid: ownRoot.kid}, claims(nil)), http.StatusUnauthorized, "invalid_token"},
		{"x5c chaining to another root", mint(pki.leafSigner(), claims(nil)), http.StatusUnauthorized, "invalid_token"},
		{"x5c leaf, other key", mint(&tokenSigner{key: pki.leafKey, x5c: s.signer.x5c}, claims(nil)), http.StatusUnauthorized, "invalid_token"},
		{"no key at all", mint(&tokenSigner{key: s.signer.key}, claims(nil)), http.StatusUnauthorized, "invalid_token"},
		{"other issuer", mint(s.signer, claims(func(c *tokenClaims) { c.Issuer = "someone-else" })), http.StatusUnauthorized, "invalid_token"},
		{"other audience", mint(s.signer, claims(func(c *tokenClaims) { c.Audience = "other-registry" })), http.StatusUnauthorized, "invalid_token"},
		{"expired", mint(s.signer, claims(func(c *tokenClaims) { c.Expiration = now.Add(-2 * time.Minute).Unix() })), http.StatusUnauthorized, "invalid_token"},
		{"not yet valid", mint(s.signer, claims(func(c *tokenClaims) { c.NotBefore = now.Add(2 * time.Minute).Unix() })), http.StatusUnauthorized, "invalid_token"},
		{"claims altered after signing", alterClaims(t, good, mint(s.signer, claims(func(c *tokenClaims) { c.Access[0].Name = "v/other" }))), http.StatusUnauthorized, "invalid_token"},
		{"other repository", mint(s.signer, claims(func(c *tokenClaims) { c.Access[0].Name = "v/other" })), http.StatusUnauthorized, "insufficient_scope"},
		{"push only", mint(s.signer, claims(func(c *tokenClaims) { c.Access[0].Actions = []string{"push"} })), http.StatusUnauthorized, "insufficient_scope"},
		{"wildcard action", mint(s.signer, claims(func(c *tokenClaims) { c.Access[0].Actions = []string{"*"} })), http.StatusOK, ""},
	} {
		resp, body := do(http.MethodGet, blob, tc.tok, nil)
		ch := resp.Header.Get("WWW-Authenticate")
		if resp.StatusCode != tc.want || (tc.want == http.StatusOK && body != string(data)) ||
			(tc.err != "" && !strings.Contains(ch, `error="`+tc.err+`"`)) {
			t.Errorf("%s: %s, challenge %q, body %q; want %d %s", tc.name, resp.Status, ch, body, tc.want, tc.err)
		}
	}
}

// alterClaims returns good's header and signature around other's claims.
func alterClaims(t *testing.T, good, other string) string {
	g, o := strings.Split(good, "."), strings.Split(other, ".")
	if len(g) != 3 || len(o) != 3 {
		t.Fatal("not compact JWS tokens")
	}
	return g[0] + "." + o[1] + "." + g[2]
}
