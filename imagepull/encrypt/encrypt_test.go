package encrypt_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/imagepull/encrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// env is a test KBS with an admin key and a guest-side KBS client.
type env struct {
	kbs    *kbstest.Instance
	repo   string
	admin  ed25519.PrivateKey
	client *kbs.Client
	sys    *types.SystemContext
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pub, priv := kbstest.NewAdminKey(t)
	repo := t.TempDir()
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(), AdminKey: pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	c, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// Keep containers/image's blob-info cache out of the machine's.
	sys := &types.SystemContext{BlobInfoCacheDir: t.TempDir(), SystemRegistriesConfPath: "/dev/null"}
	return &env{kbs: k, repo: repo, admin: priv, client: c, sys: sys}
}

func (e *env) options(keyID string) encrypt.Options {
	return encrypt.Options{KBSURL: e.kbs.URL, AdminKey: e.admin, KeyID: keyID, SystemContext: e.sys}
}

// verifyEncrypted checks that the image tagged tag in dir has every layer
// of want encrypted under keyID with algorithm, then decrypts each with a
// Decrypter whose KBC attests to the KBS, and compares the tars.
func verifyEncrypted(t *testing.T, dec *decrypt.Decrypter, dir, tag string, want []srcLayer, keyID, algorithm string) {
	t.Helper()
	m, cfg := readLayout(t, dir, tag)
	if len(m.Layers) != len(want) || len(cfg.RootFS.DiffIDs) != len(want) {
		t.Fatalf("%d layers, %d diff_ids, want %d", len(m.Layers), len(cfg.RootFS.DiffIDs), len(want))
	}
	for i, l := range m.Layers {
		if !decrypt.IsEncrypted(l.MediaType) {
			t.Fatalf("layer %d media type %q is not encrypted", i, l.MediaType)
		}
		if keyID != "" {
			packets := strings.Split(l.Annotations[keyprovider.AnnotationID], ",")
			if len(packets) != 1 {
				t.Fatalf("layer %d: %d attestation-agent packets", i, len(packets))
			}
			raw, err := base64.StdEncoding.DecodeString(packets[0])
			if err != nil {
				t.Fatal(err)
			}
			p, err := keyprovider.ParsePacket(raw)
			if err != nil {
				t.Fatal(err)
			}
			if p.KID != keyID || p.WrapType != algorithm || p.Version != "" || p.Provider != "" {
				t.Errorf("layer %d packet %s", i, raw)
			}
		}
		if l.Annotations[decrypt.AnnotationPubOpts] == "" {
			t.Errorf("layer %d has no pubopts", i)
		}
		f, err := os.Open(blobFile(dir, l.Digest))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(enc, want[i].tar[:512]) || bytes.Equal(enc, want[i].blob) {
			t.Errorf("layer %d blob holds plaintext", i)
		}
		// The puller's path: verify the encrypted digest while decrypting.
		verifier := l.Digest.Verifier()
		plain, check, err := dec.Layer(context.Background(), l, io.TeeReader(bytes.NewReader(enc), verifier))
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		got, err := io.ReadAll(plain)
		if err != nil {
			t.Fatalf("layer %d: read: %v", i, err)
		}
		if err := check(); err != nil {
			t.Fatalf("layer %d: check: %v", i, err)
		}
		if !verifier.Verified() {
			t.Errorf("layer %d: encrypted blob does not match %s", i, l.Digest)
		}
		tarBytes := untar(t, got)
		if !bytes.Equal(tarBytes, want[i].tar) {
			t.Errorf("layer %d: decrypted tar differs from the original (%d vs %d bytes)", i, len(tarBytes), len(want[i].tar))
		}
		if cfg.RootFS.DiffIDs[i] != digest.FromBytes(want[i].tar) {
			t.Errorf("layer %d: diff_id %s", i, cfg.RootFS.DiffIDs[i])
		}
		if got := decrypt.DecryptedMediaType(l.MediaType); got != ocispec.MediaTypeImageLayerGzip && got != ocispec.MediaTypeImageLayer {
			t.Errorf("layer %d: decrypted media type %q", i, got)
		}
	}
}

func TestEncryptOCILayout(t *testing.T) {
	for _, alg := range []string{"", keyprovider.A256CTR} {
		t.Run("algorithm="+alg, func(t *testing.T) {
			e := newEnv(t)
			layers := testLayers(t)
			src, dst := t.TempDir(), filepath.Join(t.TempDir(), "enc")
			writeLayout(t, src, "v1", layers)
			opts := e.options("kbs:///default/key/e2e")
			opts.Algorithm = alg
			if err := encrypt.Encrypt(context.Background(), "oci:"+src+":v1", "oci:"+dst+":v1", opts); err != nil {
				t.Fatal(err)
			}
			// The KEK is in the KBS, registered once.
			kek, err := os.ReadFile(filepath.Join(e.repo, "default", "key", "e2e"))
			if err != nil || len(kek) != 32 {
				t.Fatalf("KEK in the KBS: %d bytes, %v", len(kek), err)
			}
			if st := e.kbs.Server.Stats(); st.AdminWrites != 1 {
				t.Errorf("admin writes %d", st.AdminWrites)
			}
			wantAlg := alg
			if wantAlg == "" {
				wantAlg = keyprovider.A256GCM
			}
			dec := &decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: e.client}}
			verifyEncrypted(t, dec, dst, "v1", layers, "kbs:///default/key/e2e", wantAlg)
			if st := e.client.Stats(); st.Attestations != 1 || st.Fetches != len(layers) {
				t.Errorf("guest KBS traffic %+v", st)
			}

			// A tampered layer fails its check.
			m, _ := readLayout(t, dst, "v1")
			enc := readBlob(t, dst, m.Layers[0].Digest)
			enc[len(enc)/3] ^= 0x01
			plain, check, err := dec.Layer(context.Background(), m.Layers[0], bytes.NewReader(enc))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(plain); !errors.Is(err, decrypt.ErrTampered) {
				t.Errorf("read of a tampered layer: %v", err)
			}
			if err := check(); !errors.Is(err, decrypt.ErrTampered) {
				t.Errorf("check of a tampered layer: %v", err)
			}

			// Re-encrypting is refused: the layers are encrypted already.
			err = encrypt.Encrypt(context.Background(), "oci:"+dst+":v1", "oci:"+t.TempDir()+":v1", e.options("kbs:///default/key/again"))
			if err == nil || !strings.Contains(err.Error(), "is already encrypted") {
				t.Errorf("re-encrypt: %v", err)
			}
			if _, err := os.Stat(filepath.Join(e.repo, "default", "key", "again")); !os.IsNotExist(err) {
				t.Error("a KEK was registered for a refused image")
			}
		})
	}
}

// TestEncryptRegistry pushes the encrypted image to a loopback registry
// over plain HTTP, then pulls it (still encrypted) and decrypts it.
func TestEncryptRegistry(t *testing.T) {
	e := newEnv(t)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	host := strings.TrimPrefix(reg.URL, "http://")
	layers := testLayers(t)
	src := t.TempDir()
	writeLayout(t, src, "v1", layers)
	opts := e.options("kbs:///default/key/registry")
	opts.Insecure = true
	ref := "docker://" + host + "/guestd/enc:v1"
	if err := encrypt.Encrypt(context.Background(), "oci:"+src+":v1", ref, opts); err != nil {
		t.Fatal(err)
	}
	// Without Insecure the plain-HTTP registry is refused, before the KEK
	// (which the pushed image needs) is replaced.
	opts.Insecure = false
	err := encrypt.Encrypt(context.Background(), "oci:"+src+":v1", ref, opts)
	if err == nil || !strings.Contains(err.Error(), "encrypt image: destination docker://") {
		t.Errorf("push to a plain-HTTP registry without Insecure: %v", err)
	}
	if st := e.kbs.Server.Stats(); st.AdminWrites != 1 {
		t.Errorf("admin writes %d, want 1", st.AdminWrites)
	}

	pulled := t.TempDir()
	copyImage(t, ref, "oci:"+pulled+":v1", &types.SystemContext{DockerInsecureSkipTLSVerify: types.OptionalBoolTrue, BlobInfoCacheDir: t.TempDir(), SystemRegistriesConfPath: "/dev/null"})
	verifyEncrypted(t, &decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: e.client}}, pulled, "v1", layers, "kbs:///default/key/registry", keyprovider.A256GCM)
}

// copyImage copies without decrypting.
func copyImage(t *testing.T, from, to string, sys *types.SystemContext) {
	t.Helper()
	src, err := encrypt.ParseReference(from)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := encrypt.ParseReference(to)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()
	if _, err := copy.Image(context.Background(), pc, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys}); err != nil {
		t.Fatal(err)
	}
}

func TestEncryptErrors(t *testing.T) {
	e := newEnv(t)
	src := t.TempDir()
	writeLayout(t, src, "v1", testLayers(t))
	empty := t.TempDir()
	writeLayout(t, empty, "v1", nil)
	_, wrongKey := kbstest.NewAdminKey(t)
	good := e.options("kbs:///default/key/err")
	for _, tc := range []struct {
		name     string
		src      string
		mod      func(*encrypt.Options)
		want     string
		kbsTried bool
	}{
		{name: "KBS refuses the admin key", mod: func(o *encrypt.Options) { o.AdminKey = wrongKey },
			want: "register KEK kbs:///default/key/err: kbs set resource " + e.kbs.URL + "/kbs/v0/resource/default/key/err: HTTP 401 AdminAuthInitialization", kbsTried: true},
		{name: "KBS down", mod: func(o *encrypt.Options) { o.KBSURL = "http://127.0.0.1:1" }, want: "register KEK kbs:///default/key/err: kbs set resource"},
		{name: "no key id", mod: func(o *encrypt.Options) { o.KeyID = "" }, want: "no key id"},
		{name: "bad key id", mod: func(o *encrypt.Options) { o.KeyID = "kbs:///default/key" }, want: "key id: resource URI"},
		{name: "key id with query", mod: func(o *encrypt.Options) { o.KeyID = "kbs:///default/key/x?v=1" }, want: "takes no query"},
		{name: "bad algorithm", mod: func(o *encrypt.Options) { o.Algorithm = "A128GCM" }, want: `algorithm "A128GCM"`},
		{name: "no KBS", mod: func(o *encrypt.Options) { o.KBSURL = "" }, want: "no KBS URL and admin key"},
		{name: "source missing", src: "oci:" + filepath.Join(src, "nope") + ":v1", want: "encrypt image: source oci:"},
		{name: "source without layers", src: "oci:" + empty + ":v1", want: "has no layers to encrypt"},
		{name: "unknown transport", src: "containers-storage:x", want: `transport "containers-storage" is not supported`},
		{name: "no transport", src: "busybox", want: "want TRANSPORT:REFERENCE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := e.kbs.Server.Stats()
			o := good
			if tc.mod != nil {
				tc.mod(&o)
			}
			s := tc.src
			if s == "" {
				s = "oci:" + src + ":v1"
			}
			dst := filepath.Join(t.TempDir(), "out")
			err := encrypt.Encrypt(context.Background(), s, "oci:"+dst+":v1", o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v\nwant %q", err, tc.want)
			}
			if _, err := os.Stat(dst); !os.IsNotExist(err) {
				t.Errorf("destination written: %v", err)
			}
			after := e.kbs.Server.Stats()
			if after.AdminWrites != before.AdminWrites {
				t.Error("a KEK was registered")
			}
			if tried := after.AdminFailed > before.AdminFailed; tried != tc.kbsTried {
				t.Errorf("KBS admin request refused: %v, want %v", tried, tc.kbsTried)
			}
		})
	}
}

func TestParseAdminKey(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	k, err := encrypt.ParseAdminKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil || !k.Equal(priv) {
		t.Fatalf("Go-made key: %v", err)
	}
	// As trustee's docs make it.
	if _, err := exec.LookPath("openssl"); err == nil {
		out, err := exec.Command("openssl", "genpkey", "-algorithm", "ed25519").Output()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := encrypt.ParseAdminKey(out); err != nil {
			t.Errorf("openssl-made key: %v", err)
		}
		out, err = exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256").Output()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := encrypt.ParseAdminKey(out); err == nil || !strings.Contains(err.Error(), "want Ed25519") {
			t.Errorf("EC key: %v", err)
		}
	}
	if _, err := encrypt.ParseAdminKey([]byte("garbage")); err == nil {
		t.Error("garbage accepted")
	}
}
