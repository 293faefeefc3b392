package imagepull_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
)

// pullOK pulls ref into a new bundle, which is removed when the test ends,
// and returns the bundle and the digest Pull reports.
func pullOK(t *testing.T, p *imagepull.Puller, ref string) (string, digest.Digest) {
	t.Helper()
	bundle := t.TempDir()
	d, err := p.Pull(context.Background(), ref, bundle)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), bundle) })
	return bundle, d
}

// pullFails pulls ref, which must fail with an error containing every one
// of want and leave no bundle behind; it returns the error.
func pullFails(t *testing.T, p *imagepull.Puller, ref string, want ...string) error {
	t.Helper()
	bundle := t.TempDir()
	_, err := p.Pull(context.Background(), ref, bundle)
	if err == nil {
		p.Remove(context.Background(), bundle)
		t.Fatalf("pull %s succeeded", ref)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("pull %s: error %q does not contain %q", ref, err, w)
		}
	}
	noBundle(t, bundle)
	return err
}

// rootfsFile returns the content of name in the bundle's rootfs.
func rootfsFile(t *testing.T, bundle, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(bundle, "rootfs", name))
	if err != nil {
		t.Fatalf("rootfs: %v", err)
	}
	return string(b)
}

// oneFile is a single-layer image holding the file name with content.
func oneFile(t *testing.T, name, content string) images.Image {
	t.Helper()
	return images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File(name, content))},
		Config: images.Config{Cmd: []string{"/x"}}}
}

// getManifest fetches repo's manifest ref (a tag or a digest), accepting
// every OCI and Docker schema 2 type, and returns its Content-Type and body.
func getManifest(t *testing.T, r *registry.Registry, repo, ref string) (string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/"+repo+"/manifests/"+ref, nil)
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerManifest, images.MediaTypeDockerManifestList}, ", "))
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET manifest %s:%s: HTTP %d, %v: %s", repo, ref, resp.StatusCode, err, body)
	}
	return resp.Header.Get("Content-Type"), body
}

// TestRegistriesConf: Options.RegistriesConf (and RegistriesConfURI) is
// honoured: a prefix remapped to another location, a mirror in front of a
// registry that does not even resolve, and a blocked prefix.
func TestRegistriesConf(t *testing.T) {
	e := newEnv(t)
	images.Push(t, oneFile(t, "etc/which", "team"), e.reg, "team/app:1")
	images.Push(t, oneFile(t, "etc/which", "mirrored"), e.reg, "mirror/app/img:1")
	images.Push(t, oneFile(t, "etc/which", "blocked"), e.reg, "blocked/app:1")
	images.Push(t, oneFile(t, "etc/which", "open"), e.reg, "open/app:1")

	remap := fmt.Sprintf("[[registry]]\nprefix = \"mirror.test/team\"\nlocation = \"%s/team\"\ninsecure = true\n", e.reg.Host)
	e.put(t, "kbs:///default/registry-configuration/remap", []byte(remap))
	for _, tc := range []struct {
		name string
		set  func(o *imagepull.Options)
	}{
		{"inline", func(o *imagepull.Options) { o.RegistriesConf = []byte(remap) }},
		{"from the KBS", func(o *imagepull.Options) {
			o.RegistriesConf = []byte("this is not TOML [") // the URI wins
			o.RegistriesConfURI = "kbs:///default/registry-configuration/remap"
		}},
	} {
		t.Run("remap "+tc.name, func(t *testing.T) {
			// No InsecureRegistries: plain HTTP to the local registry is
			// allowed only by the remap entry's insecure = true.
			p := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = nil; tc.set(o) })
			bundle, d := pullOK(t, p, "mirror.test/team/app:1")
			if got := rootfsFile(t, bundle, "etc/which"); got != "team" {
				t.Fatalf("etc/which = %q, want team", got)
			}
			if want := images.ManifestDigest(t, e.reg, "team/app", "1"); d != want {
				t.Fatalf("Pull = %s, want %s", d, want)
			}
		})
	}

	t.Run("mirror", func(t *testing.T) {
		conf := fmt.Sprintf("[[registry]]\nlocation = \"unreachable.test/app\"\n\n[[registry.mirror]]\nlocation = \"%s/mirror/app\"\ninsecure = true\n", e.reg.Host)
		p := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = nil; o.RegistriesConf = []byte(conf) })
		bundle, d := pullOK(t, p, "unreachable.test/app/img:1")
		if got := rootfsFile(t, bundle, "etc/which"); got != "mirrored" {
			t.Fatalf("etc/which = %q, want mirrored", got)
		}
		if want := images.ManifestDigest(t, e.reg, "mirror/app/img", "1"); d != want {
			t.Fatalf("Pull = %s, want %s", d, want)
		}
		// Without the mirror the same name cannot be pulled at all.
		plain := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = nil })
		pullFails(t, plain, "unreachable.test/app/img:1", "unreachable.test")
	})

	t.Run("blocked", func(t *testing.T) {
		conf := fmt.Sprintf("[[registry]]\nprefix = \"%[1]s/blocked\"\nlocation = \"%[1]s/blocked\"\nblocked = true\n", e.reg.Host)
		p := e.puller(t, func(o *imagepull.Options) { o.RegistriesConf = []byte(conf) })
		pullFails(t, p, e.reg.Host+"/blocked/app:1", "blocked")
		// The rest of the registry is not.
		bundle, _ := pullOK(t, p, e.reg.Host+"/open/app:1")
		if got := rootfsFile(t, bundle, "etc/which"); got != "open" {
			t.Fatalf("etc/which = %q, want open", got)
		}
	})
}

// forwardProxy is a minimal HTTP forward proxy: it serves absolute-form
// http:// requests only, records them, and sends every one of them to
// upstream whatever host it names.
type forwardProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	log []string // "METHOD URL"
	bad int      // requests that were not absolute-form http://
}

func startForwardProxy(t *testing.T, upstream string) *forwardProxy {
	t.Helper()
	fp := &forwardProxy{}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", upstream)
		},
		DisableCompression: true,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.Out.Host = pr.In.Host }, // keep the absolute URL
		Transport: tr,
	}
	fp.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fp.mu.Lock()
		if !r.URL.IsAbs() || r.URL.Scheme != "http" {
			fp.bad++
			fp.mu.Unlock()
			http.Error(w, "forward proxy: absolute-form http:// requests only", http.StatusBadRequest)
			return
		}
		fp.log = append(fp.log, r.Method+" "+r.URL.String())
		fp.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(fp.srv.Close)
	t.Cleanup(tr.CloseIdleConnections)
	return fp
}

func (fp *forwardProxy) requests() ([]string, int) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	return append([]string(nil), fp.log...), fp.bad
}

// TestHTTPProxy: with HTTPProxy set, the registry is reached through the
// proxy: the image is named by a host name that does not resolve, which
// only the proxy can reach. NoProxy covering that name bypasses the proxy,
// and the pull fails.
func TestHTTPProxy(t *testing.T) {
	e := newEnv(t)
	img := oneFile(t, "etc/proxied", "yes")
	images.Push(t, img, e.reg, "proxied/app:1")
	_, port, err := net.SplitHostPort(e.reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	host := "registry.test:" + port
	fp := startForwardProxy(t, e.reg.Host)

	t.Run("through the proxy", func(t *testing.T) {
		p := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = []string{host}; o.HTTPProxy = fp.srv.URL })
		bundle, d := pullOK(t, p, host+"/proxied/app:1")
		if got := rootfsFile(t, bundle, "etc/proxied"); got != "yes" {
			t.Fatalf("etc/proxied = %q", got)
		}
		if want := images.ManifestDigest(t, e.reg, "proxied/app", "1"); d != want {
			t.Fatalf("Pull = %s, want %s", d, want)
		}
		reqs, bad := fp.requests()
		cfg, err := img.ConfigBlob()
		if err != nil {
			t.Fatal(err)
		}
		base := "GET http://" + host + "/v2/proxied/app/"
		for _, want := range []string{base + "manifests/1", base + "blobs/" + cfg.Digest.String(), base + "blobs/" + img.Layers[0].Digest.String()} {
			found := false
			for _, r := range reqs {
				found = found || r == want
			}
			if !found {
				t.Errorf("the proxy did not see %q; it saw %q", want, reqs)
			}
		}
		if bad != 0 {
			t.Errorf("the proxy got %d requests that were not absolute-form http://", bad)
		}
	})

	t.Run("no_proxy", func(t *testing.T) {
		before, _ := fp.requests()
		p := e.puller(t, func(o *imagepull.Options) {
			o.InsecureRegistries = []string{host}
			o.HTTPProxy = fp.srv.URL
			o.NoProxy = "registry.test"
		})
		pullFails(t, p, host+"/proxied/app:1", "lookup registry.test")
		if after, _ := fp.requests(); len(after) != len(before) {
			t.Errorf("NoProxy host went through the proxy: %q", after[len(before):])
		}
	})
}

// TestDockerSchema2: Docker schema 2 images and manifest lists pull like
// their OCI counterparts.
func TestDockerSchema2(t *testing.T) {
	e := newEnv(t)
	img := images.Image{Docker: true, Layers: []images.Layer{
		images.NewLayer(t, images.Gzip, images.BusyboxEntries(t)...),
		images.NewLayer(t, images.Uncompressed, images.File("etc/format", "docker")),
	}, Config: images.Config{Cmd: []string{"/bin/sh"}}}
	ref := images.Push(t, img, e.reg, "docker/img:1")
	if mt, body := getManifest(t, e.reg, "docker/img", "1"); mt != images.MediaTypeDockerManifest ||
		!bytes.Contains(body, []byte(images.MediaTypeDockerLayerGzip)) || !bytes.Contains(body, []byte(images.MediaTypeDockerLayer+`"`)) {
		t.Fatalf("the registry holds a %s manifest:\n%s", mt, body)
	}
	p := e.puller(t, nil)
	bundle, d := pullOK(t, p, ref.String())
	if d != ref.Digest {
		t.Fatalf("Pull = %s, want %s", d, ref.Digest)
	}
	checkRootfs(t, filepath.Join(bundle, "rootfs"))
	if got := rootfsFile(t, bundle, "etc/format"); got != "docker" {
		t.Fatalf("etc/format = %q", got)
	}

	t.Run("manifest list", func(t *testing.T) {
		amd := images.Image{Docker: true, Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("arch", "amd64"))}, Config: images.Config{Cmd: []string{"/x"}}}
		arm := images.Image{Docker: true, Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("arch", "arm64"))}, Config: images.Config{Cmd: []string{"/x"}},
			Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}
		images.Push(t, images.Index{Docker: true, Images: []images.Image{amd, arm}}, e.reg, "docker/list:1")
		if mt, body := getManifest(t, e.reg, "docker/list", "1"); mt != images.MediaTypeDockerManifestList {
			t.Fatalf("the registry holds a %s manifest:\n%s", mt, body)
		}
		for arch, inst := range map[string]images.Image{"amd64": amd, "arm64": arm} {
			want, err := inst.Descriptor()
			if err != nil {
				t.Fatal(err)
			}
			p := e.puller(t, func(o *imagepull.Options) { o.Architecture = arch })
			bundle, d := pullOK(t, p, e.reg.Host+"/docker/list:1")
			if d != want.Digest {
				t.Errorf("%s: Pull = %s, want the instance %s", arch, d, want.Digest)
			}
			if got := rootfsFile(t, bundle, "arch"); got != arch {
				t.Errorf("%s: arch = %q", arch, got)
			}
		}
	})
}

// TestJWESkopeo: layers encrypted by the real skopeo with a JWE public key
// decrypt with the private key from the KBS, a file or inline, and are
// refused without a usable key.
func TestJWESkopeo(t *testing.T) {
	e := newEnv(t)
	images.Push(t, images.Busybox(t), e.reg, "jwe/plain:1")
	dir := t.TempDir()
	writeKey := func(name string) (pubPath, privPath string, privPEM []byte) {
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		pubDER, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		privDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		privPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
		pubPath, privPath = filepath.Join(dir, name+".pub.pem"), filepath.Join(dir, name+".pem")
		if err := os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(privPath, privPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		return pubPath, privPath, privPEM
	}
	pubPath, privPath, privPEM := writeKey("jwe")
	_, _, otherPEM := writeKey("other")

	args := []string{"copy", "--quiet", "--format", "oci", "--encryption-key", "jwe:" + pubPath}
	args = append(args, e.reg.SkopeoFlags("src")...)
	args = append(args, e.reg.SkopeoFlags("dest")...)
	images.Skopeo(t, append(args, "docker://"+e.reg.Host+"/jwe/plain:1", "docker://"+e.reg.Host+"/jwe/enc:1")...)

	d := images.ManifestDigest(t, e.reg, "jwe/enc", "1")
	_, body := getManifest(t, e.reg, "jwe/enc", d.String())
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 || !strings.HasSuffix(m.Layers[0].MediaType, "+encrypted") ||
		m.Layers[0].Annotations["org.opencontainers.image.enc.keys.jwe"] == "" {
		t.Fatalf("skopeo did not make a JWE-encrypted layer:\n%s", body)
	}
	layer := m.Layers[0].Digest.String()
	e.put(t, "kbs:///default/jwe-key/1", privPEM)
	ref := e.reg.Host + "/jwe/enc:1"

	for _, tc := range []struct{ name, key string }{
		{"key from the KBS", "kbs:///default/jwe-key/1"},
		{"key file", privPath},
		{"inline key", string(privPEM)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.puller(t, func(o *imagepull.Options) { o.DecryptionKeys = []string{tc.key} })
			bundle, got := pullOK(t, p, ref)
			if got != d {
				t.Fatalf("Pull = %s, want %s", got, d)
			}
			checkRootfs(t, filepath.Join(bundle, "rootfs"))
		})
	}
	for _, tc := range []struct {
		name string
		keys []string
		want []string
	}{
		{"no key", nil, []string{"layer 0", layer, "no usable key", "jwe: no private keys configured"}},
		{"another key", []string{string(otherPEM)}, []string{"layer 0", layer, "no usable key", "jwe"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.puller(t, func(o *imagepull.Options) { o.DecryptionKeys = tc.keys })
			pullFails(t, p, ref, tc.want...)
		})
	}
}

// zeroReader reads zeros forever.
type zeroReader struct{}

func (zeroReader) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// zeroLayer streams a gzip layer of files files zeros/<i> of size zero bytes
// each, never holding the tar in memory.
func zeroLayer(t *testing.T, files int, size int64) images.Layer {
	t.Helper()
	var blob bytes.Buffer
	zw := gzip.NewWriter(&blob)
	diff := digest.Canonical.Digester()
	tw := tar.NewWriter(io.MultiWriter(zw, diff.Hash()))
	for i := range files {
		h := &tar.Header{Name: fmt.Sprintf("zeros/%d", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: images.Epoch()}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(tw, zeroReader{}, size); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return images.Layer{Blob: images.NewBlob(ocispec.MediaTypeImageLayerGzip, blob.Bytes()), DiffID: diff.Digest()}
}

// treeBytes returns the total apparent size of the regular files under dir.
func treeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestDecompressionBomb: a small blob that inflates far beyond
// MaxLayerBytes is stopped at the limit and leaves nothing of that size in
// the work directory.
func TestDecompressionBomb(t *testing.T) {
	e := newEnv(t)
	const limit = 1 << 20
	for _, tc := range []struct {
		name  string
		files int
		size  int64
	}{
		{"one 64 MiB file", 1, 64 << 20},
		{"sixteen 256 KiB files", 16, 256 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bomb := zeroLayer(t, tc.files, tc.size)
			if bomb.Size > limit/8 {
				t.Fatalf("the bomb's blob is %d bytes: not a bomb", bomb.Size)
			}
			repo := fmt.Sprintf("bomb/%d:1", tc.files)
			images.PushRaw(t, images.Image{Layers: []images.Layer{bomb}, Config: images.Config{Cmd: []string{"/x"}}}, e.reg, repo)
			work := filepath.Join(t.TempDir(), "work")
			p := e.puller(t, func(o *imagepull.Options) { o.WorkDir = work; o.MaxLayerBytes = limit })
			pullFails(t, p, e.reg.Host+"/"+repo, "layer 0", fmt.Sprint(limit))

			layers := filepath.Join(work, "store", "layers")
			entries, err := os.ReadDir(layers)
			if err != nil {
				t.Fatal(err)
			}
			if len(entries) != 0 {
				t.Errorf("the refused layer is in the store: %s holds %d entries", layers, len(entries))
			}
			for _, sub := range []string{"layers", "tmp", "overlay"} {
				dir := filepath.Join(work, "store", sub)
				entries, err := os.ReadDir(dir)
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				for _, en := range entries {
					if n := treeBytes(t, filepath.Join(dir, en.Name())); n > limit {
						t.Errorf("%s holds %d bytes, more than the %d-byte limit", filepath.Join(dir, en.Name()), n, limit)
					}
				}
			}
			if n := treeBytes(t, work); n > limit+bomb.Size+64<<10 {
				t.Errorf("the work dir holds %d bytes after the refused pull", n)
			}
		})
	}
}

// TestCachedLayers: a second image sharing the base layer does not fetch it
// again, and removing the bundles collects every layer.
func TestCachedLayers(t *testing.T) {
	e := newEnv(t)
	base := images.NewLayer(t, images.Gzip, images.BusyboxEntries(t)...)
	top := func(s string) images.Layer { return images.NewLayer(t, images.Gzip, images.File("etc/image", s)) }
	a := images.Image{Layers: []images.Layer{base, top("a")}, Config: images.Config{Cmd: []string{"/bin/sh"}}}
	b := images.Image{Layers: []images.Layer{base, top("b")}, Config: images.Config{Cmd: []string{"/bin/sh"}}}
	images.Push(t, a, e.reg, "cache/a:1")
	images.Push(t, b, e.reg, "cache/b:1")
	proxy := registry.Corrupting(t, e.reg, func(string) bool { return false }) // counts requests only
	work := filepath.Join(t.TempDir(), "work")
	var mu sync.Mutex
	var events []imagepull.Event
	p := e.puller(t, func(o *imagepull.Options) {
		o.WorkDir = work
		o.InsecureRegistries = []string{proxy.Addr().Host}
		o.Progress = func(ev imagepull.Event) { mu.Lock(); events = append(events, ev); mu.Unlock() }
	})
	blobGets := func() map[string]int {
		n := map[string]int{}
		for _, r := range proxy.Requests() {
			if i := strings.Index(r, "/blobs/sha256:"); i >= 0 && strings.HasPrefix(r, "GET ") {
				n[r[i+len("/blobs/"):]]++
			}
		}
		return n
	}
	layerDirs := func() int {
		t.Helper()
		entries, err := os.ReadDir(filepath.Join(work, "store", "layers"))
		if err != nil {
			t.Fatal(err)
		}
		return len(entries)
	}

	bundleA, _ := pullOK(t, p, proxy.Addr().Host+"/cache/a:1")
	mu.Lock()
	events = nil
	mu.Unlock()
	bundleB, _ := pullOK(t, p, proxy.Addr().Host+"/cache/b:1")
	gets := blobGets()
	if n := gets[base.Digest.String()]; n != 1 {
		t.Errorf("shared base layer fetched %d times, want 1 (requests %q)", n, proxy.Requests())
	}
	for _, l := range []images.Layer{a.Layers[1], b.Layers[1]} {
		if n := gets[l.Digest.String()]; n != 1 {
			t.Errorf("layer %s fetched %d times, want 1", l.Digest, n)
		}
	}
	mu.Lock()
	cached := map[int]bool{}
	for _, ev := range events {
		if ev.Phase == imagepull.PhaseCached {
			cached[ev.Layer] = true
		}
	}
	mu.Unlock()
	if !cached[0] || cached[1] {
		t.Errorf("image B's cached layers %v, want only layer 0", cached)
	}
	for bundle, want := range map[string]string{bundleA: "a", bundleB: "b"} {
		if got := rootfsFile(t, bundle, "etc/image"); got != want {
			t.Errorf("%s: etc/image = %q, want %q", bundle, got, want)
		}
		checkRootfs(t, filepath.Join(bundle, "rootfs"))
	}
	if n := layerDirs(); n != 3 {
		t.Errorf("the store holds %d layers, want 3 (base, a, b)", n)
	}

	// Removing A collects A's own layer only: B still runs on the base.
	if err := p.Remove(context.Background(), bundleA); err != nil {
		t.Fatal(err)
	}
	noBundle(t, bundleA)
	if n := layerDirs(); n != 2 {
		t.Errorf("after removing A the store holds %d layers, want 2", n)
	}
	checkRootfs(t, filepath.Join(bundleB, "rootfs"))
	if err := p.Remove(context.Background(), bundleB); err != nil {
		t.Fatal(err)
	}
	noBundle(t, bundleB)
	if n := layerDirs(); n != 0 {
		t.Errorf("after removing both bundles the store holds %d layers", n)
	}
	if entries, err := os.ReadDir(filepath.Join(work, "store", "meta", "layers")); err != nil || len(entries) != 0 {
		t.Errorf("layer records left: %d (%v)", len(entries), err)
	}
	// The base layer really is gone: pulling A again fetches it again.
	pullOK(t, p, proxy.Addr().Host+"/cache/a:1")
	if n := blobGets()[base.Digest.String()]; n != 2 {
		t.Errorf("after collection the base layer was fetched %d times in all, want 2", n)
	}
}

// TestUnsupportedTypes: a layer of a media type the puller does not know,
// and a manifest of a type it does not unpack (an index nested in an
// index), are refused by name.
func TestUnsupportedTypes(t *testing.T) {
	e := newEnv(t)
	p := e.puller(t, nil)

	t.Run("layer media type", func(t *testing.T) {
		plain := images.NewLayer(t, images.Gzip, images.File("etc/x", "x"))
		odd := images.RawLayer("application/x-nonsense", plain.Data, plain.DiffID)
		base := images.NewLayer(t, images.Gzip, images.File("etc/base", "base"))
		images.PushRaw(t, images.Image{Layers: []images.Layer{base, odd}, Config: images.Config{Cmd: []string{"/x"}}}, e.reg, "odd/layer:1")
		// Through a recording proxy: the image is refused by its second
		// layer's type before any layer is downloaded.
		px := registry.Corrupting(t, e.reg, func(string) bool { return false })
		pp := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = []string{px.Addr().Host} })
		pullFails(t, pp, px.Addr().Host+"/odd/layer:1", `"application/x-nonsense"`, "layer 1", "not supported")
		for _, r := range px.Requests() {
			if strings.Contains(r, odd.Digest.Encoded()) || strings.Contains(r, base.Digest.Encoded()) {
				t.Errorf("a layer of the refused image was requested: %s", r)
			}
		}
	})

	t.Run("nested index", func(t *testing.T) {
		inner := images.Index{Images: []images.Image{oneFile(t, "etc/x", "nested")}}
		innerDesc, err := inner.Descriptor()
		if err != nil {
			t.Fatal(err)
		}
		innerDesc.Platform = &ocispec.Platform{OS: "linux", Architecture: "amd64"}
		body, err := json.Marshal(ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex,
			Manifests: []ocispec.Descriptor{innerDesc}})
		if err != nil {
			t.Fatal(err)
		}
		refs, err := inner.Blobs()
		if err != nil {
			t.Fatal(err)
		}
		images.PushRaw(t, images.RawManifest{MediaType: ocispec.MediaTypeImageIndex, Body: body, Refs: refs}, e.reg, "odd/nested:1")
		pullFails(t, p, e.reg.Host+"/odd/nested:1", "manifest type", ocispec.MediaTypeImageIndex, "not supported")
	})
}

// TestRefForms: by digest, by tag and digest, and refs that do not exist.
func TestRefForms(t *testing.T) {
	e := newEnv(t)
	ref := images.Push(t, oneFile(t, "etc/form", "digest"), e.reg, "form/img:1")
	images.Push(t, oneFile(t, "etc/form", "other"), e.reg, "form/img:2")
	p := e.puller(t, nil)

	t.Run("by digest", func(t *testing.T) {
		bundle, d := pullOK(t, p, ref.Digested())
		if d != ref.Digest {
			t.Fatalf("Pull = %s, want %s", d, ref.Digest)
		}
		if got := rootfsFile(t, bundle, "etc/form"); got != "digest" {
			t.Fatalf("etc/form = %q", got)
		}
	})
	t.Run("by tag and digest", func(t *testing.T) {
		// The digest pins the image, whatever the tag now names.
		bundle, d := pullOK(t, p, ref.Name()+":2@"+ref.Digest.String())
		if d != ref.Digest {
			t.Fatalf("Pull = %s, want %s", d, ref.Digest)
		}
		if got := rootfsFile(t, bundle, "etc/form"); got != "digest" {
			t.Fatalf("etc/form = %q", got)
		}
	})
	t.Run("missing tag", func(t *testing.T) {
		pullFails(t, p, ref.Name()+":nope", "manifest unknown")
	})
	t.Run("missing digest", func(t *testing.T) {
		pullFails(t, p, ref.Name()+"@"+digest.FromString("no such manifest").String(), "manifest unknown")
	})
	t.Run("missing repository", func(t *testing.T) {
		pullFails(t, p, e.reg.Host+"/form/nothing:1", "unknown")
	})
}
