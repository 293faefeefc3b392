package decrypt

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap/jwe"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/kbc/keyprovider"
)

// Layer annotations.
const (
	// AnnotationPubOpts holds the public layer-cipher options: std base64
	// of {"cipher":"AES_256_CTR_HMAC_SHA256","hmac":…,"cipheroptions":{}}.
	AnnotationPubOpts = "org.opencontainers.image.enc.pubopts"
	// AnnotationJWE holds the private options wrapped as JWEs.
	AnnotationJWE = "org.opencontainers.image.enc.keys.jwe"
	// AnnotationKeysPrefix starts every wrapped-key annotation.
	AnnotationKeysPrefix = "org.opencontainers.image.enc.keys."

	encryptedSuffix = "+encrypted"
)

// Errors wrapped by Layer's errors and by the stream's.
var (
	// ErrNotEncrypted: the layer's media type does not end in +encrypted.
	ErrNotEncrypted = errors.New("layer is not encrypted")
	// ErrNoKey: no configured scheme could unwrap the layer key.
	ErrNoKey = errors.New("no usable key")
	// ErrTampered: the ciphertext does not match its HMAC (tampered or
	// truncated).
	ErrTampered = errors.New("layer authentication failed")
)

// IsEncrypted reports whether mediaType is an ocicrypt-encrypted layer.
func IsEncrypted(mediaType string) bool {
	return strings.HasSuffix(mediaType, encryptedSuffix)
}

// DecryptedMediaType returns the media type of the layer once decrypted:
// mediaType without "+encrypted".
func DecryptedMediaType(mediaType string) string {
	return strings.TrimSuffix(mediaType, encryptedSuffix)
}

// Decrypter decrypts layers with the keys it is configured with. Both
// fields are optional; a layer needs one scheme that works. It is safe for
// concurrent use.
type Decrypter struct {
	// Unwrapper unwraps attestation-agent packets with KEKs from the KBS.
	Unwrapper *keyprovider.Unwrapper
	// PrivateKeys unwrap JWE-wrapped keys: RSA or EC private keys, PEM or
	// DER (PKCS#1, PKCS#8, SEC 1) or JWK, without passwords.
	PrivateKeys [][]byte
}

// Layer returns the plaintext of the encrypted layer desc, read from r,
// the encrypted blob (the caller verifies r against desc.Digest). The
// stream's last Read, and check, fail with ErrTampered if the ciphertext
// does not match its HMAC; check also reads whatever the caller did not.
// The caller must call check before trusting anything it read. Errors name
// the layer digest.
func (d *Decrypter) Layer(ctx context.Context, desc ocispec.Descriptor, r io.Reader) (plain io.Reader, check func() error, err error) {
	fail := func(format string, args ...any) (io.Reader, func() error, error) {
		return nil, nil, fmt.Errorf("decrypt layer %s: %w", desc.Digest, fmt.Errorf(format, args...))
	}
	if !IsEncrypted(desc.MediaType) {
		return fail("%w: media type %q", ErrNotEncrypted, desc.MediaType)
	}
	pub, err := publicOptions(desc.Annotations)
	if err != nil {
		return fail("%w", err)
	}
	privJSON, err := d.unwrap(ctx, desc.Annotations)
	if err != nil {
		return fail("%w", err)
	}
	var priv blockcipher.PrivateLayerBlockCipherOptions
	err = json.Unmarshal(privJSON, &priv)
	clear(privJSON)
	if err != nil {
		return fail("unwrapped private options are not JSON: %v", err)
	}
	defer clear(priv.SymmetricKey)
	h, err := blockcipher.NewLayerBlockCipherHandler()
	if err != nil {
		return fail("%w", err)
	}
	src := &source{r: r}
	pr, _, err := h.Decrypt(src, blockcipher.LayerBlockCipherOptions{Public: pub, Private: priv})
	if err != nil {
		return fail("set up %s: %w", pub.CipherType, err)
	}
	v := &verifying{r: pr, src: src, digest: desc.Digest}
	return v, v.check, nil
}

// publicOptions decodes the pubopts annotation.
func publicOptions(ann map[string]string) (blockcipher.PublicLayerBlockCipherOptions, error) {
	var pub blockcipher.PublicLayerBlockCipherOptions
	b64 := ann[AnnotationPubOpts]
	if b64 == "" {
		return pub, fmt.Errorf("no %s annotation", AnnotationPubOpts)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return pub, fmt.Errorf("%s annotation is not base64: %v", AnnotationPubOpts, err)
	}
	if err := json.Unmarshal(raw, &pub); err != nil {
		return pub, fmt.Errorf("%s annotation is not JSON: %v", AnnotationPubOpts, err)
	}
	if pub.CipherType != blockcipher.AES256CTR {
		return pub, fmt.Errorf("layer cipher %q is not supported (want %s)", pub.CipherType, blockcipher.AES256CTR)
	}
	return pub, nil
}

// unwrap returns the private options JSON from the first scheme that
// unwraps one of the layer's packets. The caller zeroes the result.
func (d *Decrypter) unwrap(ctx context.Context, ann map[string]string) ([]byte, error) {
	var present []string
	for k, v := range ann {
		if s, ok := strings.CutPrefix(k, AnnotationKeysPrefix); ok && v != "" {
			present = append(present, s)
		}
	}
	slices.Sort(present)
	if len(present) == 0 {
		return nil, fmt.Errorf("%w: the layer has no %s* annotation", ErrNoKey, AnnotationKeysPrefix)
	}
	var why []string
	// Local keys first: they need no network and no attestation.
	if v := ann[AnnotationJWE]; v != "" {
		if len(d.PrivateKeys) == 0 {
			why = append(why, "jwe: no private keys configured")
		} else {
			kw := jwe.NewKeyWrapper()
			dc := &config.DecryptConfig{Parameters: map[string][][]byte{
				"privkeys":           d.PrivateKeys,
				"privkeys-passwords": make([][]byte, len(d.PrivateKeys)),
			}}
			opts, err := eachPacket(v, func(p []byte) ([]byte, error) { return kw.UnwrapKey(dc, p) })
			if err == nil {
				return opts, nil
			}
			why = append(why, "jwe: "+err.Error())
		}
	}
	if v := ann[keyprovider.AnnotationID]; v != "" {
		if d.Unwrapper == nil || d.Unwrapper.KBC == nil {
			why = append(why, keyprovider.Scheme+": no KBC configured")
		} else {
			opts, err := eachPacket(v, func(p []byte) ([]byte, error) { return d.Unwrapper.Unwrap(ctx, p) })
			if err == nil {
				return opts, nil
			}
			why = append(why, keyprovider.Scheme+": "+err.Error())
		}
	}
	for _, s := range present {
		if s != "jwe" && s != keyprovider.Scheme {
			why = append(why, s+": scheme not supported")
		}
	}
	return nil, fmt.Errorf("%w: wrapped keys present for %s; %s", ErrNoKey, strings.Join(present, ", "), strings.Join(why, "; "))
}

// eachPacket tries unwrap on each packet of an annotation value (std
// base64 parts joined by ','), returning the first success.
func eachPacket(value string, unwrap func([]byte) ([]byte, error)) ([]byte, error) {
	var errs []error
	for i, part := range strings.Split(value, ",") {
		p, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			errs = append(errs, fmt.Errorf("packet %d is not base64", i+1))
			continue
		}
		opts, err := unwrap(p)
		if err == nil {
			return opts, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// source records the encrypted stream's own read error, so that a
// failure of the decrypting reader can be told apart from a transport
// failure.
type source struct {
	r   io.Reader
	err error
}

func (s *source) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

// verifying is the plaintext stream: it turns ocicrypt's end-of-stream
// HMAC failure into ErrTampered and remembers the outcome for check.
type verifying struct {
	r      io.Reader
	src    *source
	digest digest.Digest
	err    error
	eof    bool
}

func (v *verifying) Read(p []byte) (int, error) {
	if v.err != nil {
		return 0, v.err
	}
	if v.eof {
		return 0, io.EOF
	}
	n, err := v.r.Read(p)
	switch {
	case err == io.EOF:
		v.eof = true
	case err != nil && v.src.err != nil:
		v.err = fmt.Errorf("decrypt layer %s: read encrypted blob: %w", v.digest, v.src.err)
	case err != nil:
		// The encrypted stream ended cleanly, so the decrypting reader's
		// failure is its HMAC verdict (ocicrypt's message carries raw
		// bytes: not repeated here).
		v.err = fmt.Errorf("decrypt layer %s: %w: the ciphertext does not match its HMAC (tampered or truncated)", v.digest, ErrTampered)
	}
	if v.err != nil {
		return n, v.err
	}
	return n, err
}

// check reads the rest of the stream and returns nil only if it ended and
// authenticated.
func (v *verifying) check() error {
	if v.err == nil && !v.eof {
		if _, err := io.Copy(io.Discard, v); err != nil {
			return err
		}
	}
	return v.err
}
