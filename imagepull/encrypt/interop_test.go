package encrypt_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	encconfig "github.com/containers/ocicrypt/config"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"google.golang.org/grpc"

	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/imagepull/encrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
)

// skopeo runs the real skopeo (make deps installs it), with env added to
// the environment.
func skopeo(t *testing.T, env []string, args ...string) {
	t.Helper()
	path, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatal("skopeo not installed: run make deps (apt-get install -y skopeo)")
	}
	cmd := exec.Command(path, append([]string{"--insecure-policy", "--registries-conf", "/dev/null"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("skopeo %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestSkopeoJWE: layers skopeo encrypts for a JWE recipient decrypt with
// the recipient's private key, and with nothing else.
func TestSkopeoJWE(t *testing.T) {
	if _, err := exec.LookPath("skopeo"); err != nil {
		t.Fatal("skopeo not installed: run make deps (apt-get install -y skopeo)")
	}
	dir := t.TempDir()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	writePEM(t, filepath.Join(dir, "pub.pem"), "PUBLIC KEY", pubDER)
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})

	layers := testLayers(t)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "jwe")
	writeLayout(t, src, "v1", layers)
	skopeo(t, nil, "copy", "--encryption-key", "jwe:"+filepath.Join(dir, "pub.pem"), "oci:"+src+":v1", "oci:"+dst+":v1")

	m, _ := readLayout(t, dst, "v1")
	for i, l := range m.Layers {
		if l.Annotations[decrypt.AnnotationJWE] == "" || l.Annotations[keyprovider.AnnotationID] != "" {
			t.Fatalf("layer %d annotations %v", i, l.Annotations)
		}
	}
	verifyEncrypted(t, &decrypt.Decrypter{PrivateKeys: [][]byte{privPEM}}, dst, "v1", layers, "", "")

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, dec := range []*decrypt.Decrypter{
		{PrivateKeys: [][]byte{x509.MarshalPKCS1PrivateKey(other)}},
		{},
	} {
		_, _, err := dec.Layer(context.Background(), m.Layers[0], strings.NewReader(""))
		if !errors.Is(err, decrypt.ErrNoKey) || !strings.Contains(err.Error(), m.Layers[0].Digest.String()) ||
			!strings.Contains(err.Error(), "wrapped keys present for jwe") {
			t.Errorf("decrypt without the key: %v", err)
		}
	}
}

// serveKeyProvider runs a keyprovider.Server on a unix socket and writes
// an ocicrypt key-provider config pointing at it.
func serveKeyProvider(t *testing.T, cfg keyprovider.ServerConfig) (configPath string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kp.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(g, keyprovider.NewServer(cfg))
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(lis) }()
	t.Cleanup(func() { g.Stop(); <-done })
	configPath = filepath.Join(dir, "ocicrypt.json")
	conf := `{"key-providers":{"attestation-agent":{"grpc":"unix://` + sock + `"}}}`
	if err := os.WriteFile(configPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return configPath
}

// TestOcicryptKeyProvider: containers/image and ocicrypt, configured as
// skopeo is (OCICRYPT_KEYPROVIDER_CONFIG naming a gRPC key provider, read
// by ocicrypt at init), against our keyprovider gRPC server, both ways.
// They run in a child process (this test binary, see
// TestOcicryptCopyHelper), so that ocicrypt's init sees the configuration.
// Encrypting, the server registers each KEK in the KBS and the Decrypter
// gets it back by attestation; decrypting, the server unwraps what Encrypt
// wrapped. (Debian 12's skopeo 1.9.3 does not know provider: keys.)
func TestOcicryptKeyProvider(t *testing.T) {
	e := newEnv(t)
	admin, err := kbs.NewAdmin(e.kbs.URL, e.admin, nil)
	if err != nil {
		t.Fatal(err)
	}
	conf := serveKeyProvider(t, keyprovider.ServerConfig{
		Unwrapper: &keyprovider.Unwrapper{KBC: e.client},
		Registrar: admin,
	})
	layers := testLayers(t)
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	writeLayout(t, src, "v1", layers)
	child := func(t *testing.T, mode, spec, from, to string) {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^TestOcicryptCopyHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), "OCICRYPT_KEYPROVIDER_CONFIG="+conf, "GUESTD_OCICRYPT_HELPER="+mode,
			"GUESTD_OCICRYPT_SPEC="+spec, "GUESTD_OCICRYPT_FROM="+from, "GUESTD_OCICRYPT_TO="+to)
		if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "helper copied") {
			t.Fatalf("ocicrypt %s: %v\n%s", mode, err, out)
		}
	}

	t.Run("ocicrypt encrypts through the server", func(t *testing.T) {
		dst := filepath.Join(dir, "kp")
		child(t, "encrypt", "attestation-agent:keyid=kbs:///default/key/ocicrypt::algorithm=A256CTR", "oci:"+src+":v1", "oci:"+dst+":v1")
		if kek, err := os.ReadFile(filepath.Join(e.repo, "default", "key", "ocicrypt")); err != nil || len(kek) != 32 {
			t.Fatalf("KEK in the KBS: %d bytes, %v", len(kek), err)
		}
		verifyEncrypted(t, &decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: e.client}}, dst, "v1", layers,
			"kbs:///default/key/ocicrypt", keyprovider.A256CTR)
	})

	t.Run("ocicrypt decrypts through the server", func(t *testing.T) {
		enc, plain := filepath.Join(dir, "enc"), filepath.Join(dir, "plain")
		if err := encrypt.Encrypt(context.Background(), "oci:"+src+":v1", "oci:"+enc+":v1", e.options("kbs:///default/key/ours")); err != nil {
			t.Fatal(err)
		}
		child(t, "decrypt", "attestation-agent", "oci:"+enc+":v1", "oci:"+plain+":v1")
		m, _ := readLayout(t, plain, "v1")
		if len(m.Layers) != len(layers) {
			t.Fatalf("%d layers", len(m.Layers))
		}
		for i, l := range m.Layers {
			if decrypt.IsEncrypted(l.MediaType) {
				t.Fatalf("layer %d still encrypted: %s", i, l.MediaType)
			}
			if got := untar(t, readBlob(t, plain, l.Digest)); !bytes.Equal(got, layers[i].tar) {
				t.Errorf("layer %d: ocicrypt's plaintext differs from the original", i)
			}
		}
	})
}

// TestOcicryptCopyHelper is the child process of TestOcicryptKeyProvider:
// a containers/image copy with an ocicrypt key-provider config, as skopeo
// copy --encryption-key/--decryption-key provider:... does.
func TestOcicryptCopyHelper(t *testing.T) {
	mode := os.Getenv("GUESTD_OCICRYPT_HELPER")
	if mode == "" {
		t.Skip("child process of TestOcicryptKeyProvider")
	}
	keys := [][]byte{[]byte(os.Getenv("GUESTD_OCICRYPT_SPEC"))}
	opts := &copy.Options{RemoveSignatures: true, ForceManifestMIMEType: ocispec.MediaTypeImageManifest}
	if mode == "encrypt" {
		cc, err := encconfig.EncryptWithKeyProvider(keys)
		if err != nil {
			t.Fatal(err)
		}
		opts.OciEncryptConfig, opts.OciEncryptLayers = cc.EncryptConfig, &[]int{}
	} else {
		cc, err := encconfig.DecryptWithKeyProvider(keys)
		if err != nil {
			t.Fatal(err)
		}
		opts.OciDecryptConfig = cc.DecryptConfig
	}
	src, err := encrypt.ParseReference(os.Getenv("GUESTD_OCICRYPT_FROM"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err := encrypt.ParseReference(os.Getenv("GUESTD_OCICRYPT_TO"))
	if err != nil {
		t.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Destroy()
	sys := &types.SystemContext{BlobInfoCacheDir: t.TempDir(), SystemRegistriesConfPath: "/dev/null"}
	opts.SourceCtx, opts.DestinationCtx = sys, sys
	if _, err := copy.Image(context.Background(), pc, dst, src, opts); err != nil {
		t.Fatal(err)
	}
	fmt.Println("helper copied")
}
