package registry_test

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// get fetches path from the endpoint (with its credentials when auth is
// set) and returns the response and body.
func get(t *testing.T, e *registry.Endpoint, path string, auth bool) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth {
		e.SetAuth(req)
	}
	// Without Accept, distribution 2.8 answers 404 for OCI manifests.
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerManifest, images.MediaTypeDockerManifestList}, ", "))
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", path, err)
	}
	return resp, body
}

// smallImage is a one-layer image with recognisable content.
func smallImage(t *testing.T, content string) images.Image {
	t.Helper()
	return images.Image{
		Layers: []images.Layer{images.NewLayer(t, images.Gzip,
			images.Dir("etc"), images.File("etc/message", content))},
		Config: images.Config{Cmd: []string{"/bin/cat", "/etc/message"}},
	}
}

func TestPlainRegistryPushAndPull(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	if !strings.HasPrefix(r.Host, "127.0.0.1:") || r.URL != "http://"+r.Host || r.TLS() {
		t.Fatalf("plain registry endpoint: host %q url %q tls %v", r.Host, r.URL, r.TLS())
	}
	if resp, _ := get(t, &r.Endpoint, "/v2/", false); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ anonymous: %s, want 200", resp.Status)
	}
	img := smallImage(t, "plain\n")
	ref := images.Push(t, img, r, "test/plain:v1")

	resp, body := get(t, &r.Endpoint, "/v2/test/plain/manifests/v1", false)
	if resp.StatusCode != http.StatusOK || digest.FromBytes(body) != ref.Digest {
		t.Fatalf("GET manifest: %s, digest %s, want 200 and %s", resp.Status, digest.FromBytes(body), ref.Digest)
	}
	// Pull back with skopeo into a layout: the layer bytes survive the trip.
	dir := t.TempDir()
	images.Skopeo(t, append(append([]string{"copy", "--quiet"}, r.SkopeoFlags("src")...), ref.Docker(), "oci:"+dir+":back")...)
	got, err := os.ReadFile(dir + "/blobs/sha256/" + img.Layers[0].Digest.Encoded())
	if err != nil || !bytes.Equal(got, img.Layers[0].Data) {
		t.Fatalf("layer after push and pull: err %v, equal %v", err, bytes.Equal(got, img.Layers[0].Data))
	}
	// It listens on loopback only, as configured.
	if out := r.Output(); !strings.Contains(out, "listening on "+r.Host) {
		t.Errorf("registry did not log listening on %s:\n%s", r.Host, out)
	}
}

func TestTLSRegistry(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{TLS: true})
	if r.URL != "https://"+r.Host || r.CAPEM == nil || r.CertDir == "" {
		t.Fatalf("TLS endpoint: url %q, CA %d bytes, cert dir %q", r.URL, len(r.CAPEM), r.CertDir)
	}
	if ca, err := os.ReadFile(r.CertDir + "/ca.crt"); err != nil || !bytes.Equal(ca, r.CAPEM) {
		t.Fatalf("cert dir ca.crt: err %v, matches CAPEM %v", err, bytes.Equal(ca, r.CAPEM))
	}
	if resp, _ := get(t, &r.Endpoint, "/v2/", false); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ over TLS: %s", resp.Status)
	}
	// A client that does not trust the CA is refused by TLS verification.
	plain := &http.Client{Transport: &http.Transport{}}
	if _, err := plain.Get(r.URL + "/v2/"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("GET with system roots: %v, want a certificate error", err)
	}
	ref := images.Push(t, smallImage(t, "tls\n"), r, "test/tls:v1")
	// skopeo without the cert dir (verification on) must fail; with it,
	// it inspects the image.
	if _, err := images.RunSkopeo(t, "inspect", "--raw", ref.Docker()); err == nil ||
		!strings.Contains(err.Error(), "certificate") {
		t.Fatalf("skopeo inspect without cert dir: %v, want a certificate error", err)
	}
	out := images.Skopeo(t, append(append([]string{"inspect", "--raw"}, r.SkopeoFlags("")...), ref.Docker())...)
	if digest.FromBytes(out) != ref.Digest {
		t.Fatalf("skopeo inspect --raw over TLS: digest %s, want %s", digest.FromBytes(out), ref.Digest)
	}
}

func TestTLSHtpasswdRegistry(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{TLS: true, Htpasswd: map[string]string{"bob": "b-secret", "alice": "a-secret"}})
	if r.User != "alice" || r.Password != "a-secret" {
		t.Fatalf("default credentials %q/%q, want the first user alice", r.User, r.Password)
	}
	resp, _ := get(t, &r.Endpoint, "/v2/", false)
	if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `Basic realm="guestd-test"`) {
		t.Fatalf("anonymous GET /v2/: %s %q, want 401 Basic realm", resp.Status, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get(t, &r.Endpoint, "/v2/", true); resp.StatusCode != http.StatusOK {
		t.Fatalf("authenticated GET /v2/: %s", resp.Status)
	}
	bob := r.Endpoint
	bob.User, bob.Password = "bob", "b-secret"
	if resp, _ := get(t, &bob, "/v2/", true); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v2/ as bob: %s", resp.Status)
	}
	wrong := r.Endpoint
	wrong.Password = "nope"
	if resp, _ := get(t, &wrong, "/v2/", true); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("GET /v2/ with a wrong password: %s, want 401", resp.Status)
	}

	// Anonymous push is refused; authenticated push with skopeo works.
	img := smallImage(t, "auth\n")
	dir := t.TempDir()
	if err := images.WriteOCILayout(dir, "img", img); err != nil {
		t.Fatal(err)
	}
	anon := r.Endpoint
	anon.User, anon.Password = "", ""
	args := append([]string{"copy", "--quiet"}, anon.SkopeoFlags("dest")...)
	_, err := images.RunSkopeo(t, append(args, "oci:"+dir+":img", "docker://"+r.Host+"/test/auth:anon")...)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "auth") {
		t.Fatalf("anonymous skopeo push: %v, want an authentication error", err)
	}
	ref := images.Push(t, img, r, "test/auth:v1")

	// The auth.json carries the same credentials.
	authFile := r.AuthJSON(t)
	var aj struct {
		Auths map[string]struct{ Auth string } `json:"auths"`
	}
	data, err := os.ReadFile(authFile)
	if err != nil || json.Unmarshal(data, &aj) != nil {
		t.Fatalf("read auth.json: %v: %s", err, data)
	}
	if dec, _ := base64.StdEncoding.DecodeString(aj.Auths[r.Host].Auth); string(dec) != "alice:a-secret" {
		t.Fatalf("auth.json entry for %s: %q", r.Host, dec)
	}
	out := images.Skopeo(t, "inspect", "--raw", "--cert-dir", r.CertDir, "--authfile", authFile, ref.Docker())
	if digest.FromBytes(out) != ref.Digest {
		t.Fatalf("skopeo inspect with auth.json: digest %s, want %s", digest.FromBytes(out), ref.Digest)
	}
	// A raw push (registry HTTP API) authenticates too.
	raw := images.PushRaw(t, smallImage(t, "raw\n"), r, "test/auth:raw")
	if resp, _ := get(t, &r.Endpoint, "/v2/test/auth/manifests/raw", true); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Docker-Content-Digest") != raw.Digest.String() {
		t.Fatalf("raw-pushed manifest: %s %s", resp.Status, resp.Header.Get("Docker-Content-Digest"))
	}
}

func TestHtpasswdOverPlainHTTP(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{Htpasswd: map[string]string{"u": "p"}})
	if r.TLS() || r.CertDir != "" {
		t.Fatalf("plain registry has TLS settings: %+v", r.Endpoint)
	}
	if resp, _ := get(t, &r.Endpoint, "/v2/", false); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous GET /v2/: %s, want 401", resp.Status)
	}
	ref := images.Push(t, smallImage(t, "plain auth\n"), r, "test/plainauth:v1")
	if resp, body := get(t, &r.Endpoint, "/v2/test/plainauth/manifests/v1", true); resp.StatusCode != http.StatusOK ||
		digest.FromBytes(body) != ref.Digest {
		t.Fatalf("GET manifest with credentials: %s", resp.Status)
	}
}

func TestStopKillsTheProcess(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	pid := r.PID()
	if err := r.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("registry pid %d after Stop: kill -0 gives %v, want ESRCH", pid, err)
	}
	if err := r.Stop(); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	c := &http.Client{Timeout: 2 * time.Second}
	if _, err := c.Get(r.URL + "/v2/"); err == nil {
		t.Fatalf("registry still answers after Stop")
	}
}

func TestCorruptingProxy(t *testing.T) {
	t.Parallel()
	for _, opts := range []registry.Options{{}, {TLS: true, Htpasswd: map[string]string{"u": "p"}}} {
		r := registry.Start(t, opts)
		img := smallImage(t, "corrupt me\n")
		ref := images.Push(t, img, r, "test/corrupt:v1")
		layer := img.Layers[0]
		p := registry.Corrupting(t, r, registry.BlobOf(layer.Digest.String()))
		if p.TLS() != opts.TLS || p.Host == r.Host {
			t.Fatalf("proxy endpoint %+v for registry %s", p.Endpoint, r.Host)
		}

		// The manifest and config pass through untouched.
		if resp, body := get(t, &p.Endpoint, "/v2/test/corrupt/manifests/v1", true); resp.StatusCode != http.StatusOK ||
			digest.FromBytes(body) != ref.Digest {
			t.Fatalf("manifest through proxy: %s, digest %s", resp.Status, digest.FromBytes(body))
		}
		cfg, _ := img.ConfigBlob()
		if _, body := get(t, &p.Endpoint, "/v2/test/corrupt/blobs/"+cfg.Digest.String(), true); !bytes.Equal(body, cfg.Data) {
			t.Fatalf("config through proxy changed")
		}
		if p.Tampered() != 0 {
			t.Fatalf("tampered %d responses before the layer was fetched", p.Tampered())
		}
		// The layer comes back the same length, one byte flipped, with the
		// registry's digest header: bytes that do not match the digest.
		resp, body := get(t, &p.Endpoint, "/v2/test/corrupt/blobs/"+layer.Digest.String(), true)
		if resp.StatusCode != http.StatusOK || len(body) != len(layer.Data) {
			t.Fatalf("layer through proxy: %s, %d bytes, want 200 and %d", resp.Status, len(body), len(layer.Data))
		}
		diff := 0
		for i := range body {
			if body[i] != layer.Data[i] {
				diff++
			}
		}
		if diff != 1 || digest.FromBytes(body) == layer.Digest || resp.Header.Get("Docker-Content-Digest") != layer.Digest.String() {
			t.Fatalf("layer through proxy: %d bytes differ, digest %s, header %q; want 1, not %s",
				diff, digest.FromBytes(body), resp.Header.Get("Docker-Content-Digest"), layer.Digest)
		}
		if p.Tampered() != 1 {
			t.Fatalf("Tampered() = %d, want 1", p.Tampered())
		}
		// A real client pulling through the proxy detects it.
		dir := t.TempDir()
		_, err := images.RunSkopeo(t, append(append([]string{"copy", "--quiet"}, p.SkopeoFlags("src")...),
			ref.Via(p).Docker(), "oci:"+dir+":x")...)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "digest did not match") {
			t.Fatalf("skopeo copy through corrupting proxy: %v, want a digest error", err)
		}
		reqs := strings.Join(p.Requests(), "\n")
		if !strings.Contains(reqs, "GET /v2/test/corrupt/blobs/"+layer.Digest.String()) {
			t.Fatalf("proxy requests do not include the layer:\n%s", reqs)
		}
	}
}

func TestSubstitutingProxy(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	img := smallImage(t, "original\n")
	ref := images.Push(t, img, r, "test/subst:v1")
	other := images.NewLayer(t, images.Gzip, images.Dir("etc"), images.File("etc/message", "substitute!\n"))
	layer := img.Layers[0]
	p := registry.Substituting(t, r, layer.Digest.String(), other.Data)

	resp, body := get(t, &p.Endpoint, "/v2/test/subst/blobs/"+layer.Digest.String(), false)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, other.Data) ||
		resp.Header.Get("Docker-Content-Digest") != layer.Digest.String() {
		t.Fatalf("substituted blob: %s, equal to substitute %v, digest header %q",
			resp.Status, bytes.Equal(body, other.Data), resp.Header.Get("Docker-Content-Digest"))
	}
	// The substitute is a valid gzip tar: only the digest gives it away.
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("substitute is not gzip: %v", err)
	}
	if _, err := io.ReadAll(zr); err != nil {
		t.Fatalf("substitute does not decompress: %v", err)
	}
	if p.Tampered() != 1 {
		t.Fatalf("Tampered() = %d, want 1", p.Tampered())
	}
	_, err = images.RunSkopeo(t, append(append([]string{"copy", "--quiet"}, p.SkopeoFlags("src")...),
		ref.Via(p).Docker(), "oci:"+t.TempDir()+":x")...)
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "digest did not match") {
		t.Fatalf("skopeo copy through substituting proxy: %v, want a digest error", err)
	}
	// Pushes go through the proxy too: the registry's upload Locations
	// point back at it.
	via := images.PushRaw(t, smallImage(t, "via proxy\n"), p, "test/subst:via")
	if resp, _ := get(t, &r.Endpoint, "/v2/test/subst/manifests/via", false); resp.StatusCode != http.StatusOK ||
		resp.Header.Get("Docker-Content-Digest") != via.Digest.String() {
		t.Fatalf("manifest pushed through the proxy: %s", resp.Status)
	}
	if reqs := strings.Join(p.Requests(), "\n"); !strings.Contains(reqs, "PUT /v2/test/subst/blobs/uploads/") {
		t.Fatalf("blob upload did not go through the proxy:\n%s", reqs)
	}
	// Through the registry itself the image is fine.
	images.Skopeo(t, append(append([]string{"copy", "--quiet"}, r.SkopeoFlags("src")...), ref.Docker(), "oci:"+t.TempDir()+":x")...)
}
