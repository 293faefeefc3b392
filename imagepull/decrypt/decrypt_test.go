package decrypt_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/jwe"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/resource"
)

const encGzip = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"

// mapKBC serves KEKs by canonical URI.
type mapKBC struct {
	mu    sync.Mutex
	res   map[string][]byte
	calls int
}

func (k *mapKBC) GetResource(_ context.Context, uri resource.URI) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.calls++
	v, ok := k.res[uri.String()]
	if !ok {
		return nil, fmt.Errorf("get %s: resource not found", uri)
	}
	return append([]byte(nil), v...), nil
}

// wrapFunc wraps private options for one scheme: annotation key and packet.
type wrapFunc func(t *testing.T, privOpts []byte) (string, []byte)

func aaWrap(kek []byte, kid string) wrapFunc {
	return func(t *testing.T, opts []byte) (string, []byte) {
		p, err := (&keyprovider.Wrapper{KEK: kek, KID: kid}).Wrap(opts)
		if err != nil {
			t.Fatal(err)
		}
		return keyprovider.AnnotationID, p
	}
}

func jweWrap(pubPEM []byte) wrapFunc {
	return func(t *testing.T, opts []byte) (string, []byte) {
		p, err := jwe.NewKeyWrapper().WrapKeys(&config.EncryptConfig{Parameters: map[string][][]byte{"pubkeys": {pubPEM}}}, opts)
		if err != nil {
			t.Fatal(err)
		}
		return decrypt.AnnotationJWE, p
	}
}

// encryptLayer encrypts plain as ocicrypt does and returns the blob and
// its descriptor. Packets of one scheme are joined by ','.
func encryptLayer(t *testing.T, plain []byte, wraps ...wrapFunc) ([]byte, ocispec.Descriptor) {
	t.Helper()
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		t.Fatal(err)
	}
	r, fin, err := h.Encrypt(bytes.NewReader(plain), blockcipher.AES256CTR)
	if err != nil {
		t.Fatal(err)
	}
	ct, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	lbco, err := fin()
	if err != nil {
		t.Fatal(err)
	}
	lbco.Private.Digest = digest.FromBytes(plain)
	priv, _ := json.Marshal(lbco.Private)
	pub, _ := json.Marshal(lbco.Public)
	ann := map[string]string{decrypt.AnnotationPubOpts: base64.StdEncoding.EncodeToString(pub)}
	for _, w := range wraps {
		k, p := w(t, priv)
		if ann[k] != "" {
			ann[k] += ","
		}
		ann[k] += base64.StdEncoding.EncodeToString(p)
	}
	return ct, ocispec.Descriptor{MediaType: encGzip, Digest: digest.FromBytes(ct), Size: int64(len(ct)), Annotations: ann}
}

func rsaKey(t *testing.T) (privPEM, pubPEM []byte) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

func ecKey(t *testing.T) (privDER, pubPEM []byte) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	return der, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLayer(t *testing.T) {
	kek := randBytes(t, 32)
	kbc := &mapKBC{res: map[string][]byte{"kbs:///default/key/1": kek}}
	rsaPriv, rsaPub := rsaKey(t)
	ecPriv, ecPub := ecKey(t)
	_, otherPub := rsaKey(t)
	for _, tc := range []struct {
		name      string
		size      int
		wraps     []wrapFunc
		dec       decrypt.Decrypter
		kbsFetchs int
	}{
		{name: "attestation-agent, empty layer", size: 0, wraps: []wrapFunc{aaWrap(kek, "kbs:///default/key/1")},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}, kbsFetchs: 1},
		{name: "attestation-agent, 1 KiB", size: 1 << 10, wraps: []wrapFunc{aaWrap(kek, "kbs:///default/key/1")},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}, kbsFetchs: 1},
		{name: "attestation-agent, 300 KiB", size: 300 << 10, wraps: []wrapFunc{aaWrap(kek, "kbs:///default/key/1")},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}, kbsFetchs: 1},
		{name: "second packet is ours", size: 5000, wraps: []wrapFunc{aaWrap(randBytes(t, 32), "kbs:///default/key/absent"), aaWrap(kek, "kbs:///default/key/1")},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}, kbsFetchs: 2},
		{name: "jwe RSA PEM", size: 70000, wraps: []wrapFunc{jweWrap(rsaPub)}, dec: decrypt.Decrypter{PrivateKeys: [][]byte{rsaPriv}}},
		{name: "jwe EC DER, second key", size: 70000, wraps: []wrapFunc{jweWrap(ecPub)}, dec: decrypt.Decrypter{PrivateKeys: [][]byte{rsaPriv, ecPriv}}},
		{name: "both schemes, jwe used first", size: 100, wraps: []wrapFunc{aaWrap(kek, "kbs:///default/key/1"), jweWrap(rsaPub)},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}, PrivateKeys: [][]byte{rsaPriv}}},
		{name: "both schemes, jwe key wrong, KBS used", size: 100, wraps: []wrapFunc{aaWrap(kek, "kbs:///default/key/1"), jweWrap(otherPub)},
			dec: decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}, PrivateKeys: [][]byte{rsaPriv}}, kbsFetchs: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain := randBytes(t, tc.size)
			ct, desc := encryptLayer(t, plain, tc.wraps...)
			kbc.calls = 0
			r, check, err := tc.dec.Layer(context.Background(), desc, bytes.NewReader(ct))
			if err != nil {
				t.Fatal(err)
			}
			if tc.size < 20000 {
				r = iotest.OneByteReader(r) // the smallest reads
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("plaintext differs (%d bytes, want %d)", len(got), len(plain))
			}
			if err := check(); err != nil {
				t.Fatalf("check: %v", err)
			}
			if err := check(); err != nil {
				t.Fatalf("check again: %v", err)
			}
			if kbc.calls != tc.kbsFetchs {
				t.Errorf("KBS fetches %d, want %d", kbc.calls, tc.kbsFetchs)
			}
		})
	}
}

// TestCheckWithoutReading: check alone reads and authenticates the layer.
func TestCheckWithoutReading(t *testing.T) {
	kek := randBytes(t, 32)
	dec := decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: &mapKBC{res: map[string][]byte{"kbs:///a/b/c": kek}}}}
	ct, desc := encryptLayer(t, randBytes(t, 50000), aaWrap(kek, "kbs:///a/b/c"))
	src := bytes.NewReader(ct)
	_, check, err := dec.Layer(context.Background(), desc, src)
	if err != nil {
		t.Fatal(err)
	}
	if err := check(); err != nil {
		t.Fatal(err)
	}
	if src.Len() != 0 {
		t.Errorf("check left %d ciphertext bytes unread", src.Len())
	}
}

func TestLayerTampered(t *testing.T) {
	kek := randBytes(t, 32)
	dec := decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: &mapKBC{res: map[string][]byte{"kbs:///a/b/c": kek}}}}
	plain := randBytes(t, 64<<10)
	ct, desc := encryptLayer(t, plain, aaWrap(kek, "kbs:///a/b/c"))
	flip := func(i int) []byte {
		b := bytes.Clone(ct)
		b[i] ^= 0x80
		return b
	}
	badHMAC := func() ocispec.Descriptor {
		d := desc
		d.Annotations = map[string]string{}
		for k, v := range desc.Annotations {
			d.Annotations[k] = v
		}
		raw, _ := base64.StdEncoding.DecodeString(d.Annotations[decrypt.AnnotationPubOpts])
		var pub blockcipher.PublicLayerBlockCipherOptions
		_ = json.Unmarshal(raw, &pub)
		pub.Hmac[0] ^= 1
		raw, _ = json.Marshal(pub)
		d.Annotations[decrypt.AnnotationPubOpts] = base64.StdEncoding.EncodeToString(raw)
		return d
	}()
	for _, tc := range []struct {
		name    string
		blob    []byte
		desc    ocispec.Descriptor
		readAll bool
	}{
		{"first byte flipped", flip(0), desc, true},
		{"middle byte flipped", flip(len(ct) / 2), desc, true},
		{"last byte flipped", flip(len(ct) - 1), desc, true},
		{"truncated", ct[:len(ct)-1], desc, true},
		{"extended", append(bytes.Clone(ct), 0), desc, true},
		{"hmac annotation changed", ct, badHMAC, true},
		{"caller stops early, check drains", flip(len(ct) - 1), desc, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, check, err := dec.Layer(context.Background(), tc.desc, bytes.NewReader(tc.blob))
			if err != nil {
				t.Fatal(err)
			}
			if tc.readAll {
				_, err = io.ReadAll(r)
				if !errors.Is(err, decrypt.ErrTampered) {
					t.Fatalf("read error %v, want ErrTampered", err)
				}
				if _, again := r.Read(make([]byte, 10)); !errors.Is(again, decrypt.ErrTampered) {
					t.Errorf("read after failure: %v", again)
				}
			} else if _, err := io.ReadFull(r, make([]byte, 100)); err != nil {
				t.Fatal(err)
			}
			err = check()
			if !errors.Is(err, decrypt.ErrTampered) {
				t.Fatalf("check() = %v, want ErrTampered", err)
			}
			if !regexp.MustCompile(`^decrypt layer sha256:[0-9a-f]{64}: layer authentication failed`).MatchString(err.Error()) {
				t.Errorf("error %q", err)
			}
		})
	}
}

func TestLayerSourceError(t *testing.T) {
	kek := randBytes(t, 32)
	dec := decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: &mapKBC{res: map[string][]byte{"kbs:///a/b/c": kek}}}}
	ct, desc := encryptLayer(t, randBytes(t, 40000), aaWrap(kek, "kbs:///a/b/c"))
	boom := errors.New("connection reset")
	r, check, err := dec.Layer(context.Background(), desc, io.MultiReader(bytes.NewReader(ct[:20000]), iotest.ErrReader(boom)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(r)
	if !errors.Is(err, boom) || errors.Is(err, decrypt.ErrTampered) {
		t.Errorf("read error %v, want the source's", err)
	}
	if err := check(); !errors.Is(err, boom) {
		t.Errorf("check() = %v", err)
	}
}

func TestLayerErrors(t *testing.T) {
	kek := randBytes(t, 32)
	kbc := &mapKBC{res: map[string][]byte{"kbs:///default/key/1": kek}}
	rsaPriv, rsaPub := rsaKey(t)
	otherPriv, _ := rsaKey(t)
	_, aaDesc := encryptLayer(t, []byte("x"), aaWrap(kek, "kbs:///default/key/1"))
	_, missingDesc := encryptLayer(t, []byte("x"), aaWrap(kek, "kbs:///default/key/gone"))
	_, jweDesc := encryptLayer(t, []byte("x"), jweWrap(rsaPub))
	_, bothDesc := encryptLayer(t, []byte("x"), jweWrap(rsaPub), aaWrap(kek, "kbs:///default/key/gone"))
	mod := func(d ocispec.Descriptor, kv ...string) ocispec.Descriptor {
		a := map[string]string{}
		for k, v := range d.Annotations {
			a[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(a, kv[i])
			} else {
				a[kv[i]] = kv[i+1]
			}
		}
		d.Annotations = a
		return d
	}
	pkcs7Only := mod(aaDesc, keyprovider.AnnotationID, "", "org.opencontainers.image.enc.keys.pkcs7", "AAAA")
	plainType := aaDesc
	plainType.MediaType = ocispec.MediaTypeImageLayerGzip
	full := decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}, PrivateKeys: [][]byte{otherPriv}}
	for _, tc := range []struct {
		name  string
		dec   decrypt.Decrypter
		desc  ocispec.Descriptor
		is    error
		match string
	}{
		{"not encrypted", full, plainType, decrypt.ErrNotEncrypted, `media type "application/vnd.oci.image.layer.v1.tar\+gzip"`},
		{"no pubopts", full, mod(aaDesc, decrypt.AnnotationPubOpts, ""), nil, `no org.opencontainers.image.enc.pubopts annotation`},
		{"pubopts not base64", full, mod(aaDesc, decrypt.AnnotationPubOpts, "%%"), nil, `pubopts annotation is not base64`},
		{"unknown cipher", full, mod(aaDesc, decrypt.AnnotationPubOpts, base64.StdEncoding.EncodeToString([]byte(`{"cipher":"AES_128_GCM","hmac":"AA=="}`))), nil, `layer cipher "AES_128_GCM" is not supported`},
		{"no key annotations", full, mod(aaDesc, keyprovider.AnnotationID, ""), decrypt.ErrNoKey, `has no org.opencontainers.image.enc.keys.\* annotation`},
		{"attestation-agent without KBC", decrypt.Decrypter{PrivateKeys: [][]byte{rsaPriv}}, aaDesc, decrypt.ErrNoKey,
			`wrapped keys present for provider.attestation-agent; provider.attestation-agent: no KBC configured`},
		{"KEK missing in the KBS", full, missingDesc, decrypt.ErrNoKey,
			`provider.attestation-agent: unwrap layer key \(kid "kbs:///default/key/gone"\): fetch KEK: get kbs:///default/key/gone: resource not found`},
		{"jwe without private keys", decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}, jweDesc, decrypt.ErrNoKey,
			`wrapped keys present for jwe; jwe: no private keys configured`},
		{"jwe with the wrong key", full, jweDesc, decrypt.ErrNoKey, `jwe: JWE: No suitable private key`},
		{"both fail", full, bothDesc, decrypt.ErrNoKey, `present for jwe, provider.attestation-agent; jwe: .*; provider.attestation-agent: .*kbs:///default/key/gone`},
		{"unsupported scheme only", full, pkcs7Only, decrypt.ErrNoKey, `present for pkcs7; pkcs7: scheme not supported`},
		{"packet not base64", full, mod(aaDesc, keyprovider.AnnotationID, "!!"), decrypt.ErrNoKey, `packet 1 is not base64`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, check, err := tc.dec.Layer(context.Background(), tc.desc, bytes.NewReader(nil))
			if err == nil {
				t.Fatalf("decrypted: %v, check %v", r, check != nil)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			prefix := "decrypt layer " + tc.desc.Digest.String() + ": "
			if !bytes.HasPrefix([]byte(err.Error()), []byte(prefix)) || !regexp.MustCompile(tc.match).MatchString(err.Error()) {
				t.Errorf("error %q\nwant prefix %q and match %q", err, prefix, tc.match)
			}
		})
	}
}

func TestMediaTypes(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		enc     bool
	}{
		{"application/vnd.oci.image.layer.v1.tar+gzip+encrypted", "application/vnd.oci.image.layer.v1.tar+gzip", true},
		{"application/vnd.oci.image.layer.v1.tar+zstd+encrypted", "application/vnd.oci.image.layer.v1.tar+zstd", true},
		{"application/vnd.oci.image.layer.v1.tar+encrypted", "application/vnd.oci.image.layer.v1.tar", true},
		{"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip+encrypted", "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", true},
		{"application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip", false},
		{"application/vnd.docker.image.rootfs.diff.tar.gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip", false},
		{"application/encrypted", "application/encrypted", false},
	} {
		if got := decrypt.IsEncrypted(tc.in); got != tc.enc {
			t.Errorf("IsEncrypted(%q) = %v", tc.in, got)
		}
		if got := decrypt.DecryptedMediaType(tc.in); got != tc.out {
			t.Errorf("DecryptedMediaType(%q) = %q", tc.in, got)
		}
	}
}
