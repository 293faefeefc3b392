package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	encconfig "github.com/containers/ocicrypt/config"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/test/images"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// TestOcicryptClientDecrypts plays skopeo copy --decryption-key
// provider:attestation-agent against the built daemon: the tenant encrypts
// a three-layer image (gzip busybox, zstd, uncompressed) with the real
// `guestctl image encrypt` binary, which registers the KEK in a test KBS
// through its admin API; guestd serves the ocicrypt keyprovider over gRPC
// on tcp; and a real ocicrypt client (containers/image copy.Image with an
// ocicrypt decrypt config naming the attestation-agent provider, the code
// skopeo runs) configured through OCICRYPT_KEYPROVIDER_CONFIG, as skopeo
// is, decrypts it. Debian 12's skopeo 1.9.3 does not know provider: keys
// ("Provided protocol not recognized"), so the client is this test binary
// re-executed as TestOcicryptClientHelper: ocicrypt reads the config at
// init. Against a guestd whose KBS lacks the KEK, the client fails naming
// the key id.
func TestOcicryptClientDecrypts(t *testing.T) {
	dir, err := os.MkdirTemp("", "guestd-oc") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	// The tenant's tool, built as `make build` builds it.
	guestctl := filepath.Join(dir, "guestctl")
	build := exec.Command("go", "build", "-trimpath", "-tags", "containers_image_openpgp", "-o", guestctl, "github.com/guestd/guestd/cmd/guestctl")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build guestctl: %v\n%s", err, out)
	}

	img := images.Busybox(t)
	img.Layers = append(img.Layers,
		images.NewLayer(t, images.Zstd, images.File("etc/app.conf", "confidential config\n")),
		images.NewLayer(t, images.Uncompressed, images.File("app/run.sh", "#!/bin/sh\necho confidential\n").WithMode(0o755)))
	src := filepath.Join(dir, "src")
	if err := images.WriteOCILayout(src, "v1", img); err != nil {
		t.Fatal(err)
	}
	origTars := make([][]byte, len(img.Layers))
	for i, l := range img.Layers {
		origTars[i] = ocLayerTar(t, l.MediaType, l.Data)
		if digest.FromBytes(origTars[i]) != l.DiffID {
			t.Fatalf("source layer %d: tar does not match its diff_id", i)
		}
	}

	// The tenant's KBS, with an admin key for guestctl.
	pub, priv := kbstest.NewAdminKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	adminKey := filepath.Join(dir, "admin.pem")
	if err := os.WriteFile(adminKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	repo := filepath.Join(dir, "repo")
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(), AdminKey: pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})

	const keyID = "kbs:///default/key/ocicrypt-client"
	enc := filepath.Join(dir, "enc")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	encCmd := exec.CommandContext(ctx, guestctl, "image", "encrypt", "--kbs", k.URL, "--admin-key", adminKey, "--key-id", keyID,
		"oci:"+src+":v1", "oci:"+enc+":v1")
	if out, err := encCmd.CombinedOutput(); err != nil {
		t.Fatalf("guestctl image encrypt: %v\n%s", err, out)
	}
	if kek, err := os.ReadFile(filepath.Join(repo, "default", "key", "ocicrypt-client")); err != nil || len(kek) != keyprovider.KEKSize {
		t.Fatalf("KEK in the KBS: %d bytes, %v", len(kek), err)
	}
	if s := k.Server.Stats(); s.AdminWrites != 1 || s.Attest != 0 || s.ResourceGets != 0 {
		t.Fatalf("KBS after encrypting: %+v", s)
	}
	encManifest, _ := ocReadLayout(t, enc, "v1")
	if len(encManifest.Layers) != len(img.Layers) {
		t.Fatalf("encrypted image has %d layers, want %d", len(encManifest.Layers), len(img.Layers))
	}
	for i, l := range encManifest.Layers {
		if !decrypt.IsEncrypted(l.MediaType) {
			t.Fatalf("encrypted image: layer %d media type %q", i, l.MediaType)
		}
		raw, err := base64.StdEncoding.DecodeString(l.Annotations[keyprovider.AnnotationID])
		if err != nil {
			t.Fatalf("layer %d packet: %v", i, err)
		}
		if p, err := keyprovider.ParsePacket(raw); err != nil || p.KID != keyID {
			t.Fatalf("layer %d packet %s: %v", i, raw, err)
		}
		blob := ocReadBlob(t, enc, l.Digest)
		if bytes.Equal(blob, img.Layers[i].Data) || bytes.Contains(blob, origTars[i][:512]) {
			t.Fatalf("encrypted layer %d holds plaintext", i)
		}
	}

	// The guest: guestd serving the keyprovider over gRPC, its KBC
	// attesting to the KBS with the sample TEE.
	d, conf := ocStartGuestd(t, k.URL)
	plain := filepath.Join(dir, "plain")
	if out, err := ocicryptClient(t, conf, "oci:"+enc+":v1", "oci:"+plain+":v1"); err != nil || !strings.Contains(out, "ocicrypt client copied") {
		t.Fatalf("ocicrypt client: %v\n%s", err, out)
	}

	m, cfg := ocReadLayout(t, plain, "v1")
	if len(m.Layers) != len(img.Layers) || len(cfg.RootFS.DiffIDs) != len(img.Layers) {
		t.Fatalf("decrypted image: %d layers, %d diff_ids, want %d", len(m.Layers), len(cfg.RootFS.DiffIDs), len(img.Layers))
	}
	for i, l := range m.Layers {
		if decrypt.IsEncrypted(l.MediaType) || l.Annotations[keyprovider.AnnotationID] != "" || l.Annotations[decrypt.AnnotationPubOpts] != "" {
			t.Fatalf("decrypted layer %d is still encrypted: %s %v", i, l.MediaType, l.Annotations)
		}
		// containers/image gzips an uncompressed layer before encrypting
		// it (skopeo does the same), so the plaintext media type is the
		// encrypted one's, not always the source's; the tar is the same.
		if want := decrypt.DecryptedMediaType(encManifest.Layers[i].MediaType); l.MediaType != want {
			t.Errorf("decrypted layer %d: media type %q, want %q", i, l.MediaType, want)
		}
		got := ocLayerTar(t, l.MediaType, ocReadBlob(t, plain, l.Digest))
		if !bytes.Equal(got, origTars[i]) {
			t.Errorf("decrypted layer %d (%s): tar differs from the original (%d vs %d bytes)", i, l.MediaType, len(got), len(origTars[i]))
		}
		if cfg.RootFS.DiffIDs[i] != img.Layers[i].DiffID {
			t.Errorf("decrypted layer %d: diff_id %s, want %s", i, cfg.RootFS.DiffIDs[i], img.Layers[i].DiffID)
		}
	}
	// One attestation for all the layers; the KEK (the only resource in
	// the repository) released, at most once a layer; nothing refused.
	if s := k.Server.Stats(); s.Attest != 1 || s.ResourceGets < 1 || s.ResourceGets > int64(len(m.Layers)) ||
		s.ResourceFailed != 0 || s.AttestFailed != 0 {
		t.Fatalf("KBS after decrypting: %+v, want 1 attestation and the KEK released", s)
	}
	// guestd unwrapped every layer key: one UnWrapKey call a layer.
	unwrapOK := regexp.MustCompile(`msg=ok .*rpc=UnWrapKey`)
	for range m.Layers {
		d.waitFor(t, unwrapOK)
	}
	d.stop(t)

	// A guestd whose KBS lacks the KEK: the client fails, naming it.
	k2 := kbstest.Start(t, testkbs.Config{RepoDir: t.TempDir(), Policy: testkbs.AllowAll(),
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	d2, conf2 := ocStartGuestd(t, k2.URL)
	out, err := ocicryptClient(t, conf2, "oci:"+enc+":v1", "oci:"+filepath.Join(dir, "plain2")+":v1")
	if err == nil || strings.Contains(out, "ocicrypt client copied") {
		t.Fatalf("ocicrypt client decrypted without the KEK:\n%s", out)
	}
	if !strings.Contains(out, "code = NotFound") || !strings.Contains(out, `kid "`+keyID+`"`) || !strings.Contains(out, "resource not found") {
		t.Fatalf("ocicrypt client without the KEK: error does not name %s:\n%s", keyID, out)
	}
	d2.waitFor(t, regexp.MustCompile(`msg=failed .*rpc=UnWrapKey.*`+regexp.QuoteMeta(keyID)))
	// (guestd's KBC attests afresh after trustee's 401 for a missing
	// resource, so the attestations are not counted here.)
	if s := k2.Server.Stats(); s.Attest < 1 || s.ResourceGets != 0 || s.ResourceFailed < 1 {
		t.Fatalf("KBS without the KEK: %+v", s)
	}
	d2.stop(t)
}

// ocStartGuestd runs guestd serve with the sample TEE and AA and CDH
// configs pointing at the KBS, with gRPC on loopback tcp, and writes an
// ocicrypt key-provider config naming its gRPC address as the
// attestation-agent provider.
func ocStartGuestd(t *testing.T, kbsURL string) (*proc, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "guestd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	aaConf := filepath.Join(dir, "aa.toml")
	cdhConf := filepath.Join(dir, "cdh.toml")
	cmdline := filepath.Join(dir, "cmdline")
	for path, data := range map[string]string{
		aaConf: fmt.Sprintf("[token_configs.kbs]\nurl = %q\n", kbsURL),
		cdhConf: fmt.Sprintf("socket = %q\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n[image]\nwork_dir = %q\n",
			"unix://"+filepath.Join(dir, "cdh.sock"), kbsURL, filepath.Join(dir, "work")),
		cmdline: "console=ttyS0\n",
	} {
		if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	d := startProc(t, guestdBin, nil, "serve", "--config=", "-c", aaConf, "--cdh-config", cdhConf, "--cmdline", cmdline, "--tee", "sample",
		"--attestation_sock", "unix://"+filepath.Join(dir, "aa.sock"), "--rest", "", "--grpc", "tcp://127.0.0.1:0")
	addr := d.waitFor(t, regexp.MustCompile(`"gRPC listening" addr=(\S+)`))
	d.waitFor(t, regexp.MustCompile(`guestd ready`))
	conf, err := json.Marshal(map[string]any{"key-providers": map[string]any{"attestation-agent": map[string]string{"grpc": addr}}})
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "ocicrypt_keyprovider.conf")
	if err := os.WriteFile(confPath, conf, 0o600); err != nil {
		t.Fatal(err)
	}
	return d, confPath
}

// ocicryptClient runs TestOcicryptClientHelper in a child process with
// OCICRYPT_KEYPROVIDER_CONFIG=conf, and returns its output.
func ocicryptClient(t *testing.T, conf, from, to string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestOcicryptClientHelper$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "OCICRYPT_KEYPROVIDER_CONFIG="+conf,
		"GUESTD_OCICRYPT_CLIENT_FROM="+from, "GUESTD_OCICRYPT_CLIENT_TO="+to)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestOcicryptClientHelper is the child process of
// TestOcicryptClientDecrypts: skopeo copy --decryption-key
// provider:attestation-agent FROM TO, as containers/image and ocicrypt do
// it, the provider coming from OCICRYPT_KEYPROVIDER_CONFIG (read by
// ocicrypt's init).
func TestOcicryptClientHelper(t *testing.T) {
	from := os.Getenv("GUESTD_OCICRYPT_CLIENT_FROM")
	if from == "" {
		t.Skip("child process of TestOcicryptClientDecrypts")
	}
	src, err := layout.Transport.ParseReference(strings.TrimPrefix(from, "oci:"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := layout.Transport.ParseReference(strings.TrimPrefix(os.Getenv("GUESTD_OCICRYPT_CLIENT_TO"), "oci:"))
	if err != nil {
		t.Fatal(err)
	}
	// skopeo's --decryption-key provider:attestation-agent.
	cc, err := encconfig.DecryptWithKeyProvider([][]byte{[]byte("attestation-agent")})
	if err != nil {
		t.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()
	sys := &types.SystemContext{BlobInfoCacheDir: t.TempDir(), SystemRegistriesConfPath: "/dev/null"}
	if _, err := copy.Image(context.Background(), pc, dst, src, &copy.Options{
		SourceCtx: sys, DestinationCtx: sys, RemoveSignatures: true,
		OciDecryptConfig: cc.DecryptConfig,
	}); err != nil {
		t.Fatal(err)
	}
	fmt.Println("ocicrypt client copied")
}

// ocReadLayout returns the manifest and config tagged tag in the OCI
// layout dir.
func ocReadLayout(t *testing.T, dir, tag string) (ocispec.Manifest, ocispec.Image) {
	t.Helper()
	var idx ocispec.Index
	data, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("%s index.json: %v", dir, err)
	}
	for _, d := range idx.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] != tag {
			continue
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(ocReadBlob(t, dir, d.Digest), &m); err != nil {
			t.Fatalf("%s manifest: %v", dir, err)
		}
		var c ocispec.Image
		if err := json.Unmarshal(ocReadBlob(t, dir, m.Config.Digest), &c); err != nil {
			t.Fatalf("%s config: %v", dir, err)
		}
		return m, c
	}
	t.Fatalf("%s: no manifest tagged %q", dir, tag)
	return ocispec.Manifest{}, ocispec.Image{}
}

// ocReadBlob reads a blob of the OCI layout dir and checks its digest.
func ocReadBlob(t *testing.T, dir string, d digest.Digest) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(data) != d {
		t.Fatalf("%s: blob %s does not match its digest", dir, d)
	}
	return data
}

// ocLayerTar returns the uncompressed tar of a layer blob.
func ocLayerTar(t *testing.T, mediaType string, blob []byte) []byte {
	t.Helper()
	var r io.Reader = bytes.NewReader(blob)
	switch {
	case strings.HasSuffix(mediaType, "+gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip layer: %v", err)
		}
		r = zr
	case strings.HasSuffix(mediaType, "+zstd"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatalf("zstd layer: %v", err)
		}
		defer zr.Close()
		r = zr
	case mediaType != ocispec.MediaTypeImageLayer:
		t.Fatalf("layer media type %q", mediaType)
	}
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s layer: %v", mediaType, err)
	}
	return data
}
