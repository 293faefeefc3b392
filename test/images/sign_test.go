package images_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestCosignSignature(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts registry.Options
	}{
		{"plain", registry.Options{}},
		{"tls+auth", registry.Options{TLS: true, Htpasswd: map[string]string{"signer": "pw"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := registry.Start(t, tc.opts)
			ref := images.Push(t, images.Busybox(t), r, "test/cosign:v1")
			keyDir := t.TempDir()
			pub := images.CosignSign(t, keyDir, ref)
			if !bytes.HasPrefix(pub, []byte("-----BEGIN PUBLIC KEY-----")) {
				t.Fatalf("cosign public key: %q", pub)
			}

			// The signature is the sha256-<hex>.sig tag, a simple-signing
			// layer carrying the signature annotation.
			sigTag := "sha256-" + ref.Digest.Encoded() + ".sig"
			var m ocispec.Manifest
			if err := json.Unmarshal(fetch(t, r, "/v2/test/cosign/manifests/"+sigTag), &m); err != nil {
				t.Fatal(err)
			}
			if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/vnd.dev.cosign.simplesigning.v1+json" ||
				m.Layers[0].Annotations["dev.cosignproject.cosign/signature"] == "" {
				t.Fatalf("cosign signature manifest: %+v", m)
			}
			payload := fetch(t, r, "/v2/test/cosign/blobs/"+m.Layers[0].Digest.String())
			if !strings.Contains(string(payload), ref.Digest.String()) || !strings.Contains(string(payload), r.Host+"/test/cosign") {
				t.Fatalf("cosign payload does not name the image: %s", payload)
			}

			// cosign verify accepts it with the key, and refuses another key.
			out, err := images.CosignVerify(t, filepath.Join(keyDir, "cosign.pub"), ref)
			if err != nil || !strings.Contains(string(out), ref.Digest.String()) {
				t.Fatalf("cosign verify: %v: %s", err, out)
			}
			_, otherPub := images.CosignKeyPair(t, t.TempDir())
			if _, err := images.CosignVerify(t, otherPub, ref); err == nil {
				t.Fatalf("cosign verify with another key succeeded")
			}
			// Signing again reuses the key pair.
			if again := images.CosignSign(t, keyDir, ref); !bytes.Equal(again, pub) {
				t.Fatalf("second CosignSign generated a new key")
			}
		})
	}
}

func TestCosignPolicy(t *testing.T) {
	t.Parallel()
	var p struct {
		Transports map[string]map[string][]struct {
			Type           string
			KeyData        []byte
			SignedIdentity struct{ Type string }
		}
	}
	if err := json.Unmarshal(images.CosignPolicy([]byte("PEM")), &p); err != nil {
		t.Fatal(err)
	}
	req := p.Transports["docker"][""][0]
	if req.Type != "sigstoreSigned" || string(req.KeyData) != "PEM" || req.SignedIdentity.Type != "matchRepository" {
		t.Fatalf("cosign policy requirement: %+v", req)
	}
}

func TestGPGSimpleSigning(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{TLS: true, Htpasswd: map[string]string{"u": "p"}})
	key := images.GPGKey(t)
	if len(key.Fingerprint) != 40 || !bytes.Contains(key.PubKey, []byte("BEGIN PGP PUBLIC KEY BLOCK")) {
		t.Fatalf("gpg key: fingerprint %q, armored %q", key.Fingerprint, key.PubKey)
	}
	lookaside := t.TempDir()
	img := images.Busybox(t)
	ref := images.PushSigned(t, img, r, "test/gpg:v1", key, lookaside)
	sigPath := images.SignaturePath(lookaside, ref, 1)
	if want := filepath.Join(lookaside, "test/gpg@sha256="+ref.Digest.Encoded(), "signature-1"); sigPath != want {
		t.Fatalf("signature path %s, want %s", sigPath, want)
	}
	if st, err := os.Stat(sigPath); err != nil || st.Size() == 0 {
		t.Fatalf("signature file: %v", err)
	}
	unsigned := images.Push(t, images.Image{Layers: img.Layers, Config: images.Config{Cmd: []string{"/bin/true"}}}, r, "test/gpg:unsigned")
	other := images.GPGKey(t)

	regD := images.RegistriesD(t, lookaside)
	yaml, err := os.ReadFile(filepath.Join(regD, "lookaside.yaml"))
	if err != nil || !strings.Contains(string(yaml), "lookaside: \"file://"+lookaside+"\"") {
		t.Fatalf("registries.d: %v: %s", err, yaml)
	}
	copyWith := func(keyring string, ref images.Ref) error {
		dir := t.TempDir()
		policy := filepath.Join(dir, "policy.json")
		if err := os.WriteFile(policy, images.SignedByPolicy(keyring), 0o644); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"--policy", policy, "--registries.d", regD, "copy", "--quiet", "--remove-signatures"}, r.SkopeoFlags("src")...)
		_, err := images.RunSkopeo(t, append(args, ref.Docker(), "oci:"+dir+":out")...)
		return err
	}
	// skopeo with a policy requiring the signature accepts the signed image...
	if err := copyWith(key.PubRing, ref); err != nil {
		t.Fatalf("signed image refused: %v", err)
	}
	// ...and also by digest (the signature covers the manifest digest).
	byDigest := ref
	byDigest.Tag = ""
	if err := copyWith(key.PubRing, byDigest); err != nil {
		t.Fatalf("signed image by digest refused: %v", err)
	}
	// It refuses the unsigned image, and the signed one under another key.
	if err := copyWith(key.PubRing, unsigned); err == nil || !strings.Contains(err.Error(), "no signature exists") {
		t.Fatalf("unsigned image: %v, want \"no signature exists\"", err)
	}
	if err := copyWith(other.PubRing, ref); err == nil || !strings.Contains(err.Error(), "Invalid GPG signature") {
		t.Fatalf("image signed by another key: %v, want \"Invalid GPG signature\"", err)
	}

	// Signing an image already in the registry, in place.
	ref2 := images.SkopeoSign(t, other, unsigned.Docker(), r, "test/gpg:unsigned", lookaside)
	if ref2.Digest != unsigned.Digest {
		t.Fatalf("re-signed digest %s, want %s", ref2.Digest, unsigned.Digest)
	}
	if err := copyWith(other.PubRing, unsigned); err != nil {
		t.Fatalf("image signed in place refused: %v", err)
	}
}
