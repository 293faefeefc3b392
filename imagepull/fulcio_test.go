package imagepull_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/opencontainers/go-digest"
	imgspecs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/test/images"
)

// Keyless (Fulcio + Rekor) cosign signatures, fabricated in Go with a
// test Fulcio CA and a test Rekor key, verified by containers/image against
// the offline trust root a KBS-served policy names.
//
// What containers/image v5.42.1 checks (signature/policy_eval_sigstore.go,
// signature/fulcio_cert.go, signature/internal/rekor_set.go,
// signature/internal/sigstore_payload.go), and so what is made here:
//   - the dev.sigstore.cosign/bundle annotation is a cosign RekorBundle,
//     {"SignedEntryTimestamp": base64 ECDSA-ASN.1 signature by a Rekor key of
//     sha256(JCS-canonical Payload), "Payload": {body, integratedTime,
//     logIndex, logID}}, body being a base64 hashedrekord v0.0.1 entry whose
//     signature.content is the signature annotation's bytes,
//     signature.publicKey.content the certificate annotation's PEM (the DER
//     must match), and data.hash the sha256 of the payload blob;
//   - the dev.sigstore.cosign/certificate leaf chains (through
//     dev.sigstore.cosign/chain minus its last, root, element) to the
//     policy's caData at the time integratedTime, for code signing; its
//     Fulcio issuer extension (OID 1.3.6.1.4.1.57264.1.1 raw, and/or .1.8
//     DER UTF8String) equals oidcIssuer and its email SANs hold subjectEmail;
//   - the dev.cosignproject.cosign/signature is the leaf key's signature of
//     the simple-signing payload, which names the image's manifest digest
//     and a docker-reference signedIdentity accepts.

const (
	fulcioIssuer = "https://issuer.example"
	fulcioEmail  = "dev@example.com"

	keylessPolicy = `{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"sigstoreSigned",` +
		`"fulcio":{"caPath":"kbs:///default/fulcio-ca/1","oidcIssuer":"https://issuer.example","subjectEmail":"dev@example.com"},` +
		`"rekorPublicKeyPath":"kbs:///default/rekor-key/1","signedIdentity":{"type":"matchRepository"}}]}}}`
)

var (
	// Fulcio's OIDC issuer extensions (github.com/sigstore/fulcio/pkg/certificate
	// OIDIssuer, OIDIssuerV2), the ones fulcioIssuerInCertificate reads.
	oidFulcioIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidFulcioIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}

	// signedAt anchors the fabricated signatures: the leaf certificates
	// live ten minutes from it (as Fulcio's do) and Rekor integrates the
	// entry a minute later. It is long past, so an accepted pull also shows
	// the certificate is judged at the Rekor time, not now.
	signedAt = time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
)

// fulcioCA is a test Fulcio: a self-signed root and an intermediate that
// issues the leaves, as sigstore's public instance has.
type fulcioCA struct {
	root, inter       *x509.Certificate
	interKey          *ecdsa.PrivateKey
	rootPEM, chainPEM []byte // chainPEM: intermediate then root, cosign's chain annotation
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func createCert(t *testing.T, tmpl, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) (*x509.Certificate, []byte) {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM(der)
}

func newFulcioCA(t *testing.T, name string) *fulcioCA {
	t.Helper()
	rootKey, interKey := newKey(t), newKey(t)
	caTmpl := func(cn string) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber:          serial(t),
			Subject:               pkix.Name{Organization: []string{name}, CommonName: cn},
			NotBefore:             signedAt.AddDate(-1, 0, 0),
			NotAfter:              signedAt.AddDate(10, 0, 0),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
	}
	rootTmpl := caTmpl(name + " root")
	root, rootPEM := createCert(t, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	interTmpl := caTmpl(name + " intermediate")
	interTmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}
	interTmpl.MaxPathLenZero = true
	inter, interPEM := createCert(t, interTmpl, root, &interKey.PublicKey, rootKey)
	return &fulcioCA{root: root, inter: inter, interKey: interKey, rootPEM: rootPEM,
		chainPEM: append(append([]byte(nil), interPEM...), rootPEM...)}
}

// issue returns the PEM of a Fulcio-style leaf for pub: no subject, the
// email as a (critical) SAN, code signing, the OIDC issuer in both Fulcio
// extensions, valid ten minutes from signedAt.
func (ca *fulcioCA) issue(t *testing.T, pub *ecdsa.PublicKey, email, issuer string) []byte {
	t.Helper()
	v2, err := asn1.MarshalWithParams(issuer, "utf8")
	if err != nil {
		t.Fatal(err)
	}
	_, leafPEM := createCert(t, &x509.Certificate{
		SerialNumber:   serial(t),
		NotBefore:      signedAt,
		NotAfter:       signedAt.Add(10 * time.Minute),
		KeyUsage:       x509.KeyUsageDigitalSignature,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		EmailAddresses: []string{email},
		ExtraExtensions: []pkix.Extension{
			{Id: oidFulcioIssuerV1, Value: []byte(issuer)},
			{Id: oidFulcioIssuerV2, Value: v2},
		},
	}, ca.inter, pub, ca.interKey)
	return leafPEM
}

// rekorLog is a test Rekor: its key signs the SETs.
type rekorLog struct {
	key    *ecdsa.PrivateKey
	pubPEM []byte
	logID  string
}

func newRekor(t *testing.T) *rekorLog {
	t.Helper()
	k := newKey(t)
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	id := sha256.Sum256(der) // Rekor's log ID is the SHA-256 of its key's DER
	return &rekorLog{key: k, pubPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), logID: hex.EncodeToString(id[:])}
}

// set returns the cosign bundle annotation (a Rekor SET) for a hashedrekord
// entry logging sig over a payload with sha256 payloadHash by the holder of
// keyOrCertPEM, integrated at integrated.
func (r *rekorLog) set(t *testing.T, keyOrCertPEM, sig []byte, payloadHash [32]byte, integrated time.Time) string {
	t.Helper()
	body, err := json.Marshal(map[string]any{
		"apiVersion": "0.0.1",
		"kind":       "hashedrekord",
		"spec": map[string]any{
			"data":      map[string]any{"hash": map[string]any{"algorithm": "sha256", "value": hex.EncodeToString(payloadHash[:])}},
			"signature": map[string]any{"content": sig, "publicKey": map[string]any{"content": keyOrCertPEM}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(map[string]any{
		"body":           body, // []byte: base64, as Rekor serves it
		"integratedTime": integrated.Unix(),
		"logIndex":       int64(4242),
		"logID":          r.logID,
	})
	if err != nil {
		t.Fatal(err)
	}
	canonical, err := jsoncanonicalizer.Transform(payload)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(canonical)
	setSig, err := ecdsa.SignASN1(rand.Reader, r.key, h[:])
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := json.Marshal(map[string]any{"SignedEntryTimestamp": setSig, "Payload": json.RawMessage(canonical)})
	if err != nil {
		t.Fatal(err)
	}
	return string(bundle)
}

// keyless says how to fabricate one keyless signature; the zero values of
// the knobs make a valid one.
type keyless struct {
	ca     *fulcioCA
	rekor  *rekorLog
	email  string // "" = fulcioEmail
	issuer string // "" = fulcioIssuer
	// signOver, if set, is what the signature covers instead of the payload.
	signOver []byte
	// integrated is the Rekor integration time (zero: a minute after signedAt).
	integrated time.Time
	// logOtherCert makes the SET log a certificate of another key.
	logOtherCert bool
	// signedDigest, if set, is the manifest digest the payload names.
	signedDigest digest.Digest
}

// cosignPayload is cosign's simple-signing payload (sigstore/cosign
// pkg/cosign/payload), byte for byte as cosign sign writes it.
func cosignPayload(t *testing.T, dockerRef string, d digest.Digest) []byte {
	t.Helper()
	type critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	}
	var c critical
	c.Identity.DockerReference = dockerRef
	c.Image.DockerManifestDigest = d.String()
	c.Type = "cosign container image signature"
	b, err := json.Marshal(struct {
		Critical critical `json:"critical"`
		Optional any      `json:"optional"`
	}{c, nil})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pushKeyless pushes img to the registry as repo:1 with PushRaw, then
// attaches a keyless cosign signature made as k says at the
// sha256-<hex>.sig tag. It returns the image reference.
func (e *env) pushKeyless(t *testing.T, repo string, img images.Image, k keyless) string {
	t.Helper()
	ref := images.PushRaw(t, img, e.reg, repo+":1")
	if got := images.ManifestDigest(t, e.reg, repo, "1"); got != ref.Digest {
		t.Fatalf("registry digest %s, pushed %s", got, ref.Digest)
	}
	signed := ref.Digest
	if k.signedDigest != "" {
		signed = k.signedDigest
	}
	payload := cosignPayload(t, e.reg.Host+"/"+repo, signed)
	payloadHash := sha256.Sum256(payload)

	email, issuer := k.email, k.issuer
	if email == "" {
		email = fulcioEmail
	}
	if issuer == "" {
		issuer = fulcioIssuer
	}
	ephemeral := newKey(t)
	cert := k.ca.issue(t, &ephemeral.PublicKey, email, issuer)
	toSign := payloadHash
	if k.signOver != nil {
		toSign = sha256.Sum256(k.signOver)
	}
	sig, err := ecdsa.SignASN1(rand.Reader, ephemeral, toSign[:])
	if err != nil {
		t.Fatal(err)
	}
	logged := cert
	if k.logOtherCert {
		logged = k.ca.issue(t, &newKey(t).PublicKey, email, issuer)
	}
	integrated := k.integrated
	if integrated.IsZero() {
		integrated = signedAt.Add(time.Minute)
	}
	set := k.rekor.set(t, logged, sig, payloadHash, integrated)

	layer := images.NewBlob("application/vnd.dev.cosign.simplesigning.v1+json", payload)
	layer.Annotations = map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(sig),
		"dev.sigstore.cosign/certificate":    string(cert),
		"dev.sigstore.cosign/chain":          string(k.ca.chainPEM),
		"dev.sigstore.cosign/bundle":         set,
	}
	config := images.NewBlob(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":["`+
		string(layer.Digest)+`"]},"config":{}}`))
	m, err := json.Marshal(ocispec.Manifest{
		Versioned: imgspecs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    config.Descriptor(),
		Layers:    []ocispec.Descriptor{layer.Descriptor()},
	})
	if err != nil {
		t.Fatal(err)
	}
	sigTag := strings.Replace(ref.Digest.String(), ":", "-", 1) + ".sig"
	images.PushRaw(t, images.RawManifest{MediaType: ocispec.MediaTypeImageManifest, Body: m, Refs: []images.Blob{config, layer}}, e.reg, repo+":"+sigTag)
	return e.reg.Host + "/" + repo + ":1"
}

// cosignVerifyKeyless runs the real cosign verify of ref offline, trusting
// ca (SIGSTORE_ROOT_FILE) and rekor (SIGSTORE_REKOR_PUBLIC_KEY) and
// requiring the test identity; it returns cosign's stdout.
func cosignVerifyKeyless(t *testing.T, ca *fulcioCA, rekor *rekorLog, ref string) string {
	t.Helper()
	dir := t.TempDir()
	roots, rekorPub := filepath.Join(dir, "fulcio.pem"), filepath.Join(dir, "rekor.pub")
	if err := os.WriteFile(roots, ca.chainPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rekorPub, rekor.pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(images.Cosign(t), "verify", "--offline", "--insecure-ignore-sct",
		"--allow-insecure-registry", "--allow-http-registry",
		"--certificate-identity", fulcioEmail, "--certificate-oidc-issuer", fulcioIssuer, ref)
	cmd.Env = append(os.Environ(), "SIGSTORE_ROOT_FILE="+roots, "SIGSTORE_REKOR_PUBLIC_KEY="+rekorPub,
		"TUF_ROOT="+filepath.Join(dir, "tuf"), "DOCKER_CONFIG="+filepath.Join(dir, "docker"), "SIGSTORE_NO_CACHE=true")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("cosign verify %s: %v\n%s%s", ref, err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

func keylessImage(t *testing.T, content string) images.Image {
	t.Helper()
	return images.Image{Layers: []images.Layer{images.NewLayer(t, images.Gzip, images.File("etc/keyless", content))},
		Config: images.Config{Cmd: []string{"/x"}}}
}

// pullRefused pulls ref under the policy at policyURI, expecting a refusal
// whose error holds every want, and no bundle.
func (e *env) pullRefused(t *testing.T, ref, policyURI string, want ...string) {
	t.Helper()
	p := e.puller(t, func(o *imagepull.Options) { o.PolicyURI = policyURI; o.RequirePolicy = true })
	bundle := t.TempDir()
	_, err := p.Pull(context.Background(), ref, bundle)
	if err == nil {
		p.Remove(context.Background(), bundle)
		t.Fatal("Pull succeeded")
	}
	t.Logf("refused: %v", err)
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	noBundle(t, bundle)
}

// pullAccepted pulls ref under the policy at policyURI and checks the
// rootfs holds etc/keyless with content.
func (e *env) pullAccepted(t *testing.T, ref, policyURI, content string) digest.Digest {
	t.Helper()
	p := e.puller(t, func(o *imagepull.Options) { o.PolicyURI = policyURI; o.RequirePolicy = true })
	bundle := t.TempDir()
	d, err := p.Pull(context.Background(), ref, bundle)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Remove(context.Background(), bundle) })
	if got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "etc", "keyless")); err != nil || string(got) != content {
		t.Fatalf("rootfs etc/keyless = %q, %v; want %q", got, err, content)
	}
	return d
}

// TestFulcioRekorKeyless: sigstoreSigned with a Fulcio CA and a Rekor key
// (an offline trust root), the policy, CA and key all served by the KBS.
func TestFulcioRekorKeyless(t *testing.T) {
	e := newEnv(t)
	ca, rekor := newFulcioCA(t, "test fulcio"), newRekor(t)
	e.put(t, "kbs:///default/fulcio-ca/1", ca.rootPEM)
	e.put(t, "kbs:///default/rekor-key/1", rekor.pubPEM)
	const policyURI = "kbs:///default/security-policy/keyless"
	e.put(t, policyURI, []byte(keylessPolicy))

	good := e.pushKeyless(t, "keyless/good", keylessImage(t, "good"), keyless{ca: ca, rekor: rekor})

	t.Run("accepted", func(t *testing.T) {
		d := e.pullAccepted(t, good, policyURI, "good")
		if want := images.ManifestDigest(t, e.reg, "keyless/good", "1"); d != want {
			t.Fatalf("Pull = %s, want %s", d, want)
		}
	})

	// The fabricated attachment is what cosign itself makes: cosign verify
	// accepts it with the same offline trust root.
	t.Run("cosign verify agrees", func(t *testing.T) {
		out := cosignVerifyKeyless(t, ca, rekor, good)
		if !strings.Contains(out, `"Subject":"dev@example.com"`) || !strings.Contains(out, `"Issuer":"https://issuer.example"`) {
			t.Fatalf("cosign verify output lacks the identity:\n%s", out)
		}
	})

	t.Run("identity", func(t *testing.T) {
		for _, tc := range []struct {
			name, from, to string
			want           []string
		}{
			{"wrong subject email", `"subjectEmail":"dev@example.com"`, `"subjectEmail":"other@example.com"`,
				[]string{"policy", "email", `"other@example.com" not found`, `["dev@example.com"]`}},
			{"wrong OIDC issuer", `"oidcIssuer":"https://issuer.example"`, `"oidcIssuer":"https://other-issuer.example"`,
				[]string{"policy", "Unexpected Fulcio OIDC issuer", `"https://issuer.example"`}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				pol := strings.Replace(keylessPolicy, tc.from, tc.to, 1)
				if pol == keylessPolicy {
					t.Fatalf("policy has no %s", tc.from)
				}
				uri := "kbs:///default/security-policy/" + strings.ReplaceAll(tc.name, " ", "-")
				e.put(t, uri, []byte(pol))
				e.pullRefused(t, good, uri, tc.want...)
			})
		}
	})

	t.Run("forged", func(t *testing.T) {
		otherCA, otherRekor := newFulcioCA(t, "other fulcio"), newRekor(t)
		for i, tc := range []struct {
			name string
			k    keyless
			want []string
		}{
			{"certificate from another CA", keyless{ca: otherCA, rekor: rekor},
				[]string{"policy", "leaf certificate failed", "unknown authority"}},
			{"SET signed by another Rekor key", keyless{ca: ca, rekor: otherRekor},
				[]string{"policy", "cryptographic signature verification of Rekor SET failed"}},
			{"signature over other bytes", keyless{ca: ca, rekor: rekor, signOver: []byte("other bytes")},
				[]string{"policy", "cryptographic signature verification failed"}},
			{"SET logs another certificate", keyless{ca: ca, rekor: rekor, logOtherCert: true},
				[]string{"policy", "publicKey in Rekor SET does not match"}},
			{"Rekor time after the certificate expired", keyless{ca: ca, rekor: rekor, integrated: signedAt.Add(time.Hour)},
				[]string{"policy", "leaf certificate failed", "expired"}},
			{"signature names another manifest", keyless{ca: ca, rekor: rekor, signedDigest: digest.FromString("another manifest")},
				[]string{"policy", "Signature for digest", "does not match"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				repo := "keyless/forged" + string(rune('a'+i))
				ref := e.pushKeyless(t, repo, keylessImage(t, tc.name), tc.k)
				e.pullRefused(t, ref, policyURI, tc.want...)
			})
		}
	})
}

// TestFulcioTrustRootFromKBS: the CA and the Rekor key the policy names
// must come from the KBS; while either is missing the pull fails naming it.
func TestFulcioTrustRootFromKBS(t *testing.T) {
	e := newEnv(t)
	ca, rekor := newFulcioCA(t, "test fulcio"), newRekor(t)
	const policyURI = "kbs:///default/security-policy/keyless"
	e.put(t, policyURI, []byte(keylessPolicy))
	ref := e.pushKeyless(t, "keyless/kbs", keylessImage(t, "kbs"), keyless{ca: ca, rekor: rekor})

	e.put(t, "kbs:///default/rekor-key/1", rekor.pubPEM)
	t.Run("CA missing", func(t *testing.T) {
		e.pullRefused(t, ref, policyURI, "image security policy", "caPath", "kbs:///default/fulcio-ca/1")
	})
	e.put(t, "kbs:///default/fulcio-ca/1", ca.rootPEM)
	e.del(t, "kbs:///default/rekor-key/1")
	t.Run("Rekor key missing", func(t *testing.T) {
		e.pullRefused(t, ref, policyURI, "image security policy", "rekorPublicKeyPath", "kbs:///default/rekor-key/1")
	})
	// With both present the same image is accepted.
	e.put(t, "kbs:///default/rekor-key/1", rekor.pubPEM)
	t.Run("both present", func(t *testing.T) {
		e.pullAccepted(t, ref, policyURI, "kbs")
	})
}
