package imagepull_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/imagepull/encrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/test/images"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
	"github.com/guestd/guestd/test/registry"
)

// env is one test's world: a real registry, a test KBS with an admin key,
// and a KBS client attesting with the sample TEE.
type env struct {
	reg      *registry.Registry
	kbs      *kbstest.Instance
	adminKey ed25519.PrivateKey
	client   *kbs.Client
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pub, priv := kbstest.NewAdminKey(t)
	k := kbstest.Start(t, testkbs.Config{
		RepoDir:   t.TempDir(),
		Policy:    testkbs.AllowAll(),
		AdminKey:  pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()},
	})
	c, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &env{reg: registry.Start(t, registry.Options{}), kbs: k, adminKey: priv, client: c}
}

// put stores a resource in the KBS through its admin API.
func (e *env) put(t *testing.T, uri string, data []byte) {
	t.Helper()
	e.kbs.SetResource(t, e.adminKey, uri, data)
}

func (e *env) del(t *testing.T, uri string) {
	t.Helper()
	e.kbs.DeleteResource(t, e.adminKey, uri)
}

func (e *env) puller(t *testing.T, mod func(*imagepull.Options)) *imagepull.Puller {
	t.Helper()
	opts := imagepull.Options{
		WorkDir:            filepath.Join(t.TempDir(), "work"),
		KBC:                e.client,
		InsecureRegistries: []string{e.reg.Host},
		Architecture:       "amd64",
	}
	if mod != nil {
		mod(&opts)
	}
	p, err := imagepull.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// layerMediaTypes returns the layer media types of a manifest.
func layerMediaTypes(t *testing.T, r *registry.Registry, repo string, d digest.Digest) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/"+repo+"/manifests/"+d.String(), nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m ocispec.Manifest
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.MediaType)
	}
	return out
}

// encryptedSigned pushes busybox, encrypts it under kid with the KEK
// registered in the KBS, and signs the encrypted image with cosign. It
// returns the encrypted image reference and the cosign public key.
func (e *env) encryptedSigned(t *testing.T, kid string) (string, []byte) {
	t.Helper()
	images.Push(t, images.Busybox(t), e.reg, "app/plain:1")
	err := encrypt.Encrypt(context.Background(), "docker://"+e.reg.Host+"/app/plain:1", "docker://"+e.reg.Host+"/app/enc:1",
		encrypt.Options{KBSURL: e.kbs.URL, AdminKey: e.adminKey, KeyID: kid, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	ref := images.Ref{Target: e.reg, Repo: "app/enc", Tag: "1", Digest: images.ManifestDigest(t, e.reg, "app/enc", "1")}
	pub := images.CosignSign(t, t.TempDir(), ref)
	return e.reg.Host + "/app/enc:1", pub
}

const cosignPolicyKBS = `{
  "default": [{"type": "reject"}],
  "transports": {"docker": {"": [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign-key/1",
    "signedIdentity": {"type": "matchRepository"}}]}}
}`

// checkRootfs compares the bundle's rootfs with the busybox image's
// entries, file by file.
func checkRootfs(t *testing.T, rootfs string) {
	t.Helper()
	n := 0
	for _, e := range images.BusyboxEntries(t) {
		p := filepath.Join(rootfs, e.Name)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatalf("rootfs lacks %s: %v", e.Name, err)
		}
		switch e.Kind {
		case images.KindFile:
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, e.Content) {
				t.Fatalf("%s differs from the image (%v)", e.Name, err)
			}
			if e.Mode != 0 && int64(fi.Mode().Perm()) != e.Mode&0o777 {
				t.Fatalf("%s mode %v, want %o", e.Name, fi.Mode(), e.Mode)
			}
		case images.KindSymlink:
			target, err := os.Readlink(p)
			if err != nil || target != e.Target {
				t.Fatalf("%s -> %q, want %q (%v)", e.Name, target, e.Target, err)
			}
		case images.KindDir:
			if !fi.IsDir() {
				t.Fatalf("%s is not a directory", e.Name)
			}
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d entries checked", n)
	}
}

// noBundle asserts a failed pull left nothing that looks like a bundle.
func noBundle(t *testing.T, bundle string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(bundle, "config.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("failed pull left %s/config.json (%v)", bundle, err)
	}
	rootfs := filepath.Join(bundle, "rootfs")
	var st, parent unix.Stat_t
	if unix.Stat(rootfs, &st) == nil && unix.Stat(bundle, &parent) == nil && st.Dev != parent.Dev {
		t.Errorf("failed pull left %s mounted", rootfs)
		_ = unix.Unmount(rootfs, unix.MNT_DETACH)
	}
	if entries, _ := os.ReadDir(rootfs); len(entries) > 0 {
		t.Errorf("failed pull left %d entries in %s", len(entries), rootfs)
	}
}

// TestSeedScenario: an encrypted, cosign-signed image; the policy, the
// cosign key and the KEK all come from the KBS.
func TestSeedScenario(t *testing.T) {
	e := newEnv(t)
	ref, pub := e.encryptedSigned(t, "kbs:///default/key/1")
	e.put(t, "kbs:///default/security-policy/test", []byte(cosignPolicyKBS))
	e.put(t, "kbs:///default/cosign-key/1", pub)

	var mu sync.Mutex
	phases := map[imagepull.Phase]int{}
	p := e.puller(t, func(o *imagepull.Options) {
		o.PolicyURI = "kbs:///default/security-policy/test"
		o.RequirePolicy = true
		o.Progress = func(ev imagepull.Event) { mu.Lock(); phases[ev.Phase]++; mu.Unlock() }
	})
	bundle := t.TempDir()
	d, err := p.Pull(context.Background(), ref, bundle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), bundle) })
	if want := images.ManifestDigest(t, e.reg, "app/enc", "1"); d != want {
		t.Fatalf("Pull = %s, want %s", d, want)
	}
	checkRootfs(t, filepath.Join(bundle, "rootfs"))
	var spec specs.Spec
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil || json.Unmarshal(data, &spec) != nil || spec.Root == nil || spec.Root.Path != "rootfs" {
		t.Fatalf("config.json: %v\n%s", err, data)
	}
	if phases[imagepull.PhaseApply] == 0 || phases[imagepull.PhaseMounted] != 1 {
		t.Fatalf("progress phases %v", phases)
	}
	// The layers really were encrypted, and the policy, the cosign key
	// and every KEK cost one attestation.
	if enc := layerMediaTypes(t, e.reg, "app/enc", d); len(enc) == 0 || !strings.HasSuffix(enc[0], "+encrypted") {
		t.Fatalf("encrypted image layer media types %v", enc)
	}
	if s := e.kbs.Server.Stats(); s.Attest != 1 || s.ResourceGets < 3 {
		t.Fatalf("KBS stats %+v: want 1 attestation and at least 3 resources", s)
	}

	// A re-pull of the cached image evaluates the policy again: with the
	// key swapped in the KBS it is refused although every layer is cached.
	_, other := images.CosignKeyPair(t, t.TempDir())
	otherPub, err := os.ReadFile(other)
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kbs:///default/cosign-key/1", otherPub)
	bundle2 := t.TempDir()
	if _, err := p.Pull(context.Background(), ref, bundle2); err == nil || !strings.Contains(err.Error(), "policy") {
		t.Fatalf("re-pull with another key: %v", err)
	}
	noBundle(t, bundle2)

	// Remove unmounts and cleans the bundle.
	if err := p.Remove(context.Background(), bundle); err != nil {
		t.Fatal(err)
	}
	noBundle(t, bundle)
}

func TestRefusals(t *testing.T) {
	e := newEnv(t)
	ref, pub := e.encryptedSigned(t, "kbs:///default/key/1")
	e.put(t, "kbs:///default/security-policy/test", []byte(cosignPolicyKBS))
	e.put(t, "kbs:///default/cosign-key/1", pub)
	plain := e.reg.Host + "/app/plain:1"
	_, otherPubPath := images.CosignKeyPair(t, t.TempDir())
	otherPub, _ := os.ReadFile(otherPubPath)
	e.put(t, "kbs:///default/cosign-key/other", otherPub)
	otherPolicy := strings.Replace(cosignPolicyKBS, "cosign-key/1", "cosign-key/other", 1)
	e.put(t, "kbs:///default/security-policy/other", []byte(otherPolicy))
	e.put(t, "kbs:///default/security-policy/reject", []byte(`{"default":[{"type":"reject"}]}`))
	e.put(t, "kbs:///default/security-policy/any", []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`))

	for _, tc := range []struct {
		name, ref, policy string
		require           bool
		setup             func(t *testing.T)
		want              []string
	}{
		{"unsigned image under sigstoreSigned", plain, "kbs:///default/security-policy/test", true, nil, []string{"policy", "no signature"}},
		{"signature by another key", ref, "kbs:///default/security-policy/other", true, nil, []string{"policy"}},
		{"reject default", plain, "kbs:///default/security-policy/reject", true, nil, []string{"policy", "rejected"}},
		{"verification required without policy", plain, "", true, nil, []string{"no image security policy"}},
		{"policy missing in the KBS", plain, "kbs:///default/security-policy/none", true, nil, []string{"image security policy", "default/security-policy/none"}},
		{"missing KEK", ref, "kbs:///default/security-policy/any", false,
			func(t *testing.T) { e.del(t, "kbs:///default/key/1") }, []string{"layer 0", "decrypt", "default/key/1"}},
		{"wrong KEK", ref, "kbs:///default/security-policy/any", false,
			func(t *testing.T) { e.put(t, "kbs:///default/key/1", bytes.Repeat([]byte{7}, 32)) }, []string{"layer 0", "decrypt"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup(t)
			}
			p := e.puller(t, func(o *imagepull.Options) { o.PolicyURI = tc.policy; o.RequirePolicy = tc.require })
			bundle := t.TempDir()
			_, err := p.Pull(context.Background(), tc.ref, bundle)
			if err == nil {
				p.Remove(context.Background(), bundle)
				t.Fatal("Pull succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			noBundle(t, bundle)
		})
	}
}

// TestHostileRegistry: bytes that do not match the digest, and a config
// whose diff_id does not match the layer, are refused.
func TestHostileRegistry(t *testing.T) {
	e := newEnv(t)
	img := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("etc/hello", "hello"))},
		Config: images.Config{Cmd: []string{"/bin/true"}}}
	images.Push(t, img, e.reg, "good/img:1")

	t.Run("corrupted blob", func(t *testing.T) {
		proxy := registry.Corrupting(t, e.reg, registry.BlobOf(img.Layers[0].Digest.String()))
		p := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = []string{proxy.Addr().Host} })
		bundle := t.TempDir()
		_, err := p.Pull(context.Background(), proxy.Addr().Host+"/good/img:1", bundle)
		if err == nil || !strings.Contains(err.Error(), "does not match its digest") {
			t.Fatalf("error %v", err)
		}
		if proxy.Tampered() == 0 {
			t.Fatal("the proxy tampered with nothing")
		}
		noBundle(t, bundle)
	})
	t.Run("diff_id mismatch", func(t *testing.T) {
		bad := img
		bad.DiffIDs = []digest.Digest{digest.FromString("not the layer")}
		images.PushRaw(t, bad, e.reg, "bad/diffid:1")
		p := e.puller(t, nil)
		bundle := t.TempDir()
		_, err := p.Pull(context.Background(), e.reg.Host+"/bad/diffid:1", bundle)
		if err == nil || !strings.Contains(err.Error(), "diff_id") {
			t.Fatalf("error %v", err)
		}
		noBundle(t, bundle)
	})
	t.Run("malicious tar", func(t *testing.T) {
		for i, entries := range [][]images.Entry{
			{images.File("../escape", "x")},
			{images.Symlink("l", "/"), images.File("l/tmp/escape", "x")},
			{images.Hardlink("h", "../../etc/passwd")},
			{images.Whiteout("../x")},
			{{Name: "dev/mem", Kind: images.KindCharDev, Devmajor: 1, Devminor: 1}},
		} {
			mal := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, entries...)}, Config: images.Config{Cmd: []string{"/x"}}}
			repo := fmt.Sprintf("mal/img%d:1", i)
			images.PushRaw(t, mal, e.reg, repo)
			p := e.puller(t, nil)
			bundle := t.TempDir()
			_, err := p.Pull(context.Background(), e.reg.Host+"/"+repo, bundle)
			if err == nil || !strings.Contains(err.Error(), "apply") {
				t.Errorf("%v: error %v", entries[0].Name, err)
			}
			noBundle(t, bundle)
		}
	})
}

// TestConcurrentPulls: 8 pulls at once of images sharing their base
// layers; every shared blob is fetched once.
func TestConcurrentPulls(t *testing.T) {
	e := newEnv(t)
	base := images.NewLayer(t, images.Gzip, images.BusyboxEntries(t)...)
	mid := images.NewLayer(t, images.Gzip, images.File("etc/shared", "shared"))
	for i := range 8 {
		img := images.Image{Layers: []images.Layer{base, mid, images.NewLayer(t, images.Zstd, images.File("etc/own", fmt.Sprint(i)))},
			Config: images.Config{Cmd: []string{"/bin/sh"}}}
		images.Push(t, img, e.reg, fmt.Sprintf("multi/img%d:1", i))
	}
	proxy := registry.Corrupting(t, e.reg, func(string) bool { return false }) // counts requests only
	p := e.puller(t, func(o *imagepull.Options) { o.InsecureRegistries = []string{proxy.Addr().Host} })
	var wg sync.WaitGroup
	errs := make([]error, 8)
	bundles := make([]string, 8)
	for i := range 8 {
		bundles[i] = t.TempDir()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Pull(context.Background(), fmt.Sprintf("%s/multi/img%d:1", proxy.Addr().Host, i), bundles[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pull %d: %v", i, err)
		}
		t.Cleanup(func() { p.Remove(context.Background(), bundles[i]) })
		got, err := os.ReadFile(filepath.Join(bundles[i], "rootfs", "etc", "own"))
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("bundle %d: etc/own = %q, %v", i, got, err)
		}
	}
	fetches := map[string]int{}
	for _, r := range proxy.Requests() {
		if strings.Contains(r, "/blobs/sha256:") && strings.HasPrefix(r, "GET") {
			fetches[r[strings.Index(r, "sha256:"):]]++
		}
	}
	for _, l := range []images.Layer{base, mid} {
		if n := fetches[l.Digest.String()]; n != 1 {
			t.Errorf("shared layer %s fetched %d times, want 1 (requests: %v)", l.Digest, n, proxy.Requests())
		}
	}
}

// TestGPGLookaside: simple signing by skopeo, signature in a lookaside
// directory named by a sigstore config, key from the KBS.
func TestGPGLookaside(t *testing.T) {
	e := newEnv(t)
	key := images.GPGKey(t)
	lookaside := t.TempDir()
	img := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("etc/signed", "yes"))}, Config: images.Config{Cmd: []string{"/x"}}}
	images.PushSigned(t, img, e.reg, "gpg/img:1", key, lookaside)
	e.put(t, "kbs:///default/gpg-key/1", key.PubKey)
	e.put(t, "kbs:///default/security-policy/gpg", []byte(`{"default":[{"type":"reject"}],"transports":{"docker":{"":[
		{"type":"signedBy","keyType":"GPGKeys","keyPath":"kbs:///default/gpg-key/1","signedIdentity":{"type":"matchRepository"}}]}}}`))
	p := e.puller(t, func(o *imagepull.Options) {
		o.PolicyURI = "kbs:///default/security-policy/gpg"
		o.SigstoreConfig = images.LookasideYAML(lookaside)
	})
	bundle := t.TempDir()
	if _, err := p.Pull(context.Background(), e.reg.Host+"/gpg/img:1", bundle); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), bundle) })
	if got, _ := os.ReadFile(filepath.Join(bundle, "rootfs", "etc", "signed")); string(got) != "yes" {
		t.Fatalf("etc/signed = %q", got)
	}
	// An unsigned image under the same policy is refused.
	images.Push(t, img, e.reg, "gpg/unsigned:1")
	if _, err := p.Pull(context.Background(), e.reg.Host+"/gpg/unsigned:1", t.TempDir()); err == nil {
		t.Fatal("unsigned image accepted")
	}
}

// TestMultiArch picks the instance of the configured platform.
func TestMultiArch(t *testing.T) {
	e := newEnv(t)
	amd := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("arch", "amd64"))}, Config: images.Config{Cmd: []string{"/x"}}}
	arm := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("arch", "arm64"))}, Config: images.Config{Cmd: []string{"/x"}},
		Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}
	images.Push(t, images.Index{Images: []images.Image{amd, arm}}, e.reg, "multi/arch:1")
	for _, arch := range []string{"amd64", "arm64"} {
		p := e.puller(t, func(o *imagepull.Options) { o.Architecture = arch })
		bundle := t.TempDir()
		if _, err := p.Pull(context.Background(), e.reg.Host+"/multi/arch:1", bundle); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(filepath.Join(bundle, "rootfs", "arch"))
		p.Remove(context.Background(), bundle)
		if string(got) != arch {
			t.Fatalf("%s: arch = %q", arch, got)
		}
	}
}

// TestAuthenticatedRegistry: credentials from an auth.json in the KBS.
func TestAuthenticatedRegistry(t *testing.T) {
	e := newEnv(t)
	secure := registry.Start(t, registry.Options{TLS: true, Htpasswd: map[string]string{"alice": "s3cret"}})
	img := images.Image{Layers: []images.Layer{images.NewLayer(t, images.Uncompressed, images.File("etc/private", "ok"))}, Config: images.Config{Cmd: []string{"/x"}}}
	images.Push(t, img, secure, "priv/img:1")
	auth, err := os.ReadFile(secure.AuthJSON(t))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kbs:///default/credential/test", auth)
	for _, tc := range []struct {
		name    string
		authURI string
		ok      bool
	}{{"with credentials", "kbs:///default/credential/test", true}, {"anonymous", "", false}} {
		t.Run(tc.name, func(t *testing.T) {
			p := e.puller(t, func(o *imagepull.Options) {
				o.InsecureRegistries = nil
				o.ExtraRootCAs = [][]byte{secure.CAPEM}
				o.AuthURI = tc.authURI
			})
			bundle := t.TempDir()
			_, err := p.Pull(context.Background(), secure.Host+"/priv/img:1", bundle)
			if tc.ok != (err == nil) {
				t.Fatalf("Pull error %v, want success %v", err, tc.ok)
			}
			if err == nil {
				p.Remove(context.Background(), bundle)
			}
		})
	}
}
