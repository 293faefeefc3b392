package registry_test

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// bearer sends method path to the registry with "Authorization: Bearer
// token" (none when token is "") and returns the response and body.
func bearer(t *testing.T, r *registry.Registry, method, path, token string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, r.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerManifest, images.MediaTypeDockerManifestList}, ", "))
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, body
}

// fetch gets a token that the test needs to succeed.
func fetch(t *testing.T, s *registry.TokenServer, user, password string, scopes ...string) string {
	t.Helper()
	tok, status, err := s.Fetch(user, password, scopes...)
	if err != nil || status != http.StatusOK {
		t.Fatalf("token for %q %v: status %d, %v", user, scopes, status, err)
	}
	return tok
}

// jwtParts decodes a token's header and claims.
func jwtParts(t *testing.T, tok string) (hdr, claims map[string]any) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", tok)
	}
	for i, dst := range []*map[string]any{&hdr, &claims} {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("token part %d: %v", i, err)
		}
		if err := json.Unmarshal(raw, dst); err != nil {
			t.Fatalf("token part %d: %v: %s", i, err, raw)
		}
	}
	return hdr, claims
}

// wantDenied asserts a 401 whose challenge names the token realm and the
// given error (insufficient_scope, invalid_token) and scope.
func wantDenied(t *testing.T, r *registry.Registry, resp *http.Response, body []byte, errCode, scope string) {
	t.Helper()
	ch := resp.Header.Get("WWW-Authenticate")
	if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(ch, `Bearer realm="`+r.Token.Realm+`"`) ||
		(errCode != "" && !strings.Contains(ch, `error="`+errCode+`"`)) ||
		(scope != "" && !strings.Contains(ch, `scope="`+scope+`"`)) {
		t.Fatalf("got %s, challenge %q, body %s; want 401 with error %q and scope %q", resp.Status, ch, body, errCode, scope)
	}
}

func TestTokenRegistry(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{TLS: true, Token: true,
		Htpasswd: map[string]string{"alice": "a-secret", "bob": "b-secret"}})
	ts := r.Token
	if ts == nil || !strings.HasPrefix(ts.URL, "https://127.0.0.1:") || ts.Realm != ts.URL+"/token" || ts.URL == r.URL {
		t.Fatalf("token server %+v for registry %s", ts, r.URL)
	}
	if r.User != "alice" || r.Password != "a-secret" {
		t.Fatalf("default credentials %q/%q, want alice", r.User, r.Password)
	}
	if cfg, err := os.ReadFile(r.Config); err != nil || !strings.Contains(string(cfg), "rootcertbundle: \""+ts.RootFile+"\"") ||
		strings.Contains(string(cfg), "htpasswd") {
		t.Fatalf("registry config (%v):\n%s", err, cfg)
	}

	// The registry challenges for a bearer token from the realm, and
	// basic credentials sent to it directly are worth nothing.
	resp, _ := get(t, &r.Endpoint, "/v2/", false)
	want := `Bearer realm="` + ts.Realm + `",service="` + registry.TokenService + `"`
	if resp.StatusCode != http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != want {
		t.Fatalf("anonymous GET /v2/: %s %q, want 401 %q", resp.Status, resp.Header.Get("WWW-Authenticate"), want)
	}
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/", nil)
	req.SetBasicAuth("alice", "a-secret")
	if resp, err := r.Client().Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ with basic auth: %v %v, want 401", resp.Status, err)
	} else {
		resp.Body.Close()
	}

	// Wrong or unknown credentials get no token.
	for _, up := range [][2]string{{"alice", "wrong"}, {"mallory", "a-secret"}, {"alice", ""}} {
		tok, status, err := ts.Fetch(up[0], up[1], "repository:team/a:pull")
		if status != http.StatusUnauthorized || tok != "" || err == nil || !strings.Contains(err.Error(), "UNAUTHORIZED") {
			t.Fatalf("token for %q/%q: status %d, token %q, err %v; want 401", up[0], up[1], status, tok, err)
		}
	}
	if ts.Refused() != 3 || len(ts.Grants()) != 0 {
		t.Fatalf("after bad credentials: refused %d, grants %+v", ts.Refused(), ts.Grants())
	}

	// Anonymous push is refused: skopeo gets a token that grants nothing.
	imgA, imgB := smallImage(t, "repo a\n"), smallImage(t, "repo b\n")
	dir := t.TempDir()
	if err := images.WriteOCILayout(dir, "img", imgA); err != nil {
		t.Fatal(err)
	}
	anon := r.Endpoint
	anon.User, anon.Password = "", ""
	args := append([]string{"copy", "--quiet"}, anon.SkopeoFlags("dest")...)
	_, err := images.RunSkopeo(t, append(args, "oci:"+dir+":img", "docker://"+r.Host+"/team/a:anon")...)
	if msg := strings.ToLower(errString(err)); err == nil || !(strings.Contains(msg, "unauthorized") || strings.Contains(msg, "denied")) {
		t.Fatalf("anonymous skopeo push: %v, want unauthorized", err)
	}
	grants := ts.Grants()
	if len(grants) == 0 {
		t.Fatal("anonymous skopeo push asked for no token")
	}
	for _, g := range grants {
		if g.User != "" || len(g.Access) != 0 {
			t.Fatalf("anonymous grant %+v", g)
		}
	}
	if !slices.ContainsFunc(grants, func(g registry.Grant) bool { return slices.Contains(g.Scopes, "repository:team/a:pull,push") }) {
		t.Fatalf("anonymous skopeo push never asked for push on team/a: %+v", grants)
	}

	// Authenticated skopeo push goes through the token flow.
	refA := images.Push(t, imgA, r, "team/a:v1")
	refB := images.Push(t, imgB, r, "team/b:v1")
	pushed := false
	for _, g := range ts.Grants()[len(grants):] {
		if g.User != "alice" {
			t.Fatalf("grant during alice's push: %+v", g)
		}
		for _, a := range g.Access {
			pushed = pushed || (a.Type == "repository" && a.Name == "team/a" && slices.Contains(a.Actions, "push"))
		}
	}
	if !pushed {
		t.Fatalf("no push token for team/a was issued: %+v", ts.Grants())
	}
	// skopeo reads it back with the auth.json credentials, and not
	// without them.
	out := images.Skopeo(t, "inspect", "--raw", "--cert-dir", r.CertDir, "--authfile", r.AuthJSON(t), refA.Docker())
	if digest.FromBytes(out) != refA.Digest {
		t.Fatalf("skopeo inspect with auth.json: digest %s, want %s", digest.FromBytes(out), refA.Digest)
	}
	if _, err := images.RunSkopeo(t, append(append([]string{"inspect", "--raw"}, anon.SkopeoFlags("")...), refA.Docker())...); err == nil {
		t.Fatal("anonymous skopeo inspect succeeded")
	}

	// The token is what distribution 2.8 verifies: an ES256 JWT with the
	// signing certificate in x5c, chaining to the registry's root bundle.
	tokA := fetch(t, ts, "alice", "a-secret", "repository:team/a:pull")
	hdr, claims := jwtParts(t, tokA)
	if hdr["alg"] != "ES256" || hdr["typ"] != "JWT" {
		t.Fatalf("token header %v", hdr)
	}
	x5c, _ := hdr["x5c"].([]any)
	if len(x5c) != 1 {
		t.Fatalf("token header x5c %v", hdr["x5c"])
	}
	leafDER, _ := base64.StdEncoding.DecodeString(x5c[0].(string))
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	rootBlock, _ := pem.Decode(ts.RootPEM)
	root, err := x509.ParseCertificate(rootBlock.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("token signing certificate does not chain to the root bundle: %v", err)
	}
	if f, _ := os.ReadFile(ts.RootFile); !bytes.Equal(f, ts.RootPEM) {
		t.Fatal("RootFile does not hold RootPEM")
	}
	exp, _ := claims["exp"].(float64)
	iat, _ := claims["iat"].(float64)
	var access []registry.Access
	rawAccess, _ := json.Marshal(claims["access"])
	if err := json.Unmarshal(rawAccess, &access); err != nil || claims["iss"] != registry.TokenIssuer ||
		claims["aud"] != registry.TokenService || claims["sub"] != "alice" || claims["jti"] == "" || claims["nbf"] != claims["iat"] ||
		exp-iat != 300 || time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute ||
		len(access) != 1 || access[0].Type != "repository" || access[0].Name != "team/a" || !slices.Equal(access[0].Actions, []string{"pull"}) {
		t.Fatalf("token claims %v (access %s)", claims, access)
	}

	// A token for team/a reads team/a and nothing else.
	resp, body := bearer(t, r, http.MethodGet, "/v2/team/a/manifests/v1", tokA)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != refA.Digest {
		t.Fatalf("team/a manifest with team/a token: %s, digest %s", resp.Status, digest.FromBytes(body))
	}
	resp, body = bearer(t, r, http.MethodGet, "/v2/team/b/manifests/v1", tokA)
	wantDenied(t, r, resp, body, "insufficient_scope", "repository:team/b:pull")
	resp, body = bearer(t, r, http.MethodGet, "/v2/team/b/blobs/"+imgB.Layers[0].Digest.String(), tokA)
	wantDenied(t, r, resp, body, "insufficient_scope", "repository:team/b:pull")
	// ... and only with the actions it grants: no push with a pull token.
	resp, body = bearer(t, r, http.MethodPost, "/v2/team/a/blobs/uploads/", tokA)
	wantDenied(t, r, resp, body, "insufficient_scope", "")
	tokPush := fetch(t, ts, "alice", "a-secret", "repository:team/a:pull,push")
	if resp, body := bearer(t, r, http.MethodPost, "/v2/team/a/blobs/uploads/", tokPush); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upload with a push token: %s %s", resp.Status, body)
	}
	// A token for both repositories (two scope parameters) reads both;
	// bob, the other user, gets one as well.
	tokAB := fetch(t, ts, "bob", "b-secret", "repository:team/a:pull", "repository:team/b:pull")
	for _, p := range []string{"/v2/team/a/manifests/v1", "/v2/team/b/manifests/v1"} {
		if resp, _ := bearer(t, r, http.MethodGet, p, tokAB); resp.StatusCode != http.StatusOK {
			t.Fatalf("%s with a token for both: %s", p, resp.Status)
		}
	}
	// An anonymous token passes /v2/ and grants nothing, even if it asks.
	tokAnon := fetch(t, ts, "", "", "repository:team/a:pull")
	if _, claims := jwtParts(t, tokAnon); claims["sub"] != "" || len(claims["access"].([]any)) != 0 {
		t.Fatalf("anonymous token claims %v", claims)
	}
	if resp, _ := bearer(t, r, http.MethodGet, "/v2/", tokAnon); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ with an anonymous token: %s", resp.Status)
	}
	resp, body = bearer(t, r, http.MethodGet, "/v2/team/a/manifests/v1", tokAnon)
	wantDenied(t, r, resp, body, "insufficient_scope", "repository:team/a:pull")
	// Garbage is not a token.
	resp, body = bearer(t, r, http.MethodGet, "/v2/team/a/manifests/v1", tokA[:len(tokA)-8]+"AAAAAAAA")
	wantDenied(t, r, resp, body, "invalid_token", "")

	// The token server speaks the protocol's edges.
	if _, status, _ := ts.Fetch("alice", "a-secret", "repository:no-actions"); status != http.StatusBadRequest {
		t.Fatalf("malformed scope: status %d, want 400", status)
	}
	for _, tc := range []struct {
		method, query string
		status        int
	}{
		{http.MethodGet, "service=other&scope=repository:team/a:pull", http.StatusBadRequest},
		{http.MethodPost, "service=" + registry.TokenService, http.StatusMethodNotAllowed},
	} {
		req, _ := http.NewRequest(tc.method, ts.Realm+"?"+tc.query, nil)
		req.SetBasicAuth("alice", "a-secret")
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Fatalf("%s %s: %s, want %d", tc.method, tc.query, resp.Status, tc.status)
		}
	}

	// Endpoint.SetAuth fetches tokens too: the raw HTTP push and the
	// catalog (registry:catalog:*) work with the endpoint's credentials.
	raw := images.PushRaw(t, smallImage(t, "raw\n"), r, "team/raw:v1")
	if resp, _ := get(t, &r.Endpoint, "/v2/team/raw/manifests/v1", true); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Docker-Content-Digest") != raw.Digest.String() {
		t.Fatalf("raw-pushed manifest: %s %s", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
	resp, body = get(t, &r.Endpoint, "/v2/_catalog", true)
	var cat struct{ Repositories []string }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &cat) != nil ||
		!slices.Equal(cat.Repositories, []string{"team/a", "team/b", "team/raw"}) {
		t.Fatalf("catalog: %s %s", resp.Status, body)
	}
	wrong := r.Endpoint
	wrong.Password = "nope"
	if resp, _ := get(t, &wrong, "/v2/team/a/manifests/v1", true); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET with a wrong password: %s, want 401", resp.Status)
	}
	// A proxy in front of the registry passes the token flow through.
	p := registry.Corrupting(t, r, func(string) bool { return false })
	if resp, body := get(t, &p.Endpoint, "/v2/team/b/manifests/v1", true); resp.StatusCode != http.StatusOK ||
		digest.FromBytes(body) != refB.Digest {
		t.Fatalf("manifest through a proxy: %s", resp.Status)
	}
}

func TestTokenRegistryPlainHTTP(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{Token: true, Htpasswd: map[string]string{"u": "p"}})
	if r.TLS() || !strings.HasPrefix(r.Token.Realm, "http://127.0.0.1:") {
		t.Fatalf("plain token registry: registry %s, realm %s", r.URL, r.Token.Realm)
	}
	img := smallImage(t, "plain token\n")
	ref := images.Push(t, img, r, "test/plaintoken:v1")
	dir := t.TempDir()
	images.Skopeo(t, append(append([]string{"copy", "--quiet"}, r.SkopeoFlags("src")...), ref.Docker(), "oci:"+dir+":back")...)
	got, err := os.ReadFile(dir + "/blobs/sha256/" + img.Layers[0].Digest.Encoded())
	if err != nil || !bytes.Equal(got, img.Layers[0].Data) {
		t.Fatalf("layer after push and pull: err %v, equal %v", err, bytes.Equal(got, img.Layers[0].Data))
	}
	if n := len(r.Token.Grants()); n == 0 {
		t.Fatal("no token was issued")
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
