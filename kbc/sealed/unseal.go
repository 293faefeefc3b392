package sealed

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/resource"
)

// maxKeySize bounds a verification key read from the key directory.
const maxKeySize = 64 << 10

// keySize is the size of AES-256 keys: KEKs and data keys.
const keySize = 32

// Unsealer unseals sealed secrets. It is safe for concurrent use if its
// KBC is.
type Unsealer struct {
	// KBC fetches kbs:// verification keys, vault secrets and envelope
	// KEKs. Without it only file-named keys and no providers work.
	KBC kbc.Client
	// KeyDir holds verification keys named by file; empty means
	// DefaultKeyDir.
	KeyDir string
	// SkipVerification skips the JWS header and signature entirely.
	SkipVerification bool
}

// Unseal verifies secret (unless SkipVerification) and returns the secret
// value it seals. The caller owns the result; it is secret.
func (u *Unsealer) Unseal(ctx context.Context, secret []byte) ([]byte, error) {
	s, err := u.open(ctx, string(secret))
	if err != nil {
		return nil, fmt.Errorf("unseal secret: %w", err)
	}
	var out []byte
	switch {
	case s.Vault != nil:
		out, err = u.vault(ctx, s.Vault)
	default:
		out, err = u.envelope(ctx, s.Envelope)
	}
	if err != nil {
		return nil, fmt.Errorf("unseal secret: %w", err)
	}
	return out, nil
}

// b64 is base64url without padding, as JWS uses.
var b64 = base64.RawURLEncoding.Strict()

// open checks the envelope of the secret and the signature, and parses
// the payload.
func (u *Unsealer) open(ctx context.Context, secret string) (*Secret, error) {
	rest, ok := strings.CutPrefix(secret, Prefix)
	if !ok {
		return nil, fmt.Errorf("%w: does not start with %q", ErrMalformed, Prefix)
	}
	parts := strings.Split(rest, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: %d dot-separated parts after %q, want 3 (header, payload, signature)", ErrMalformed, len(parts), Prefix)
	}
	if !u.SkipVerification {
		if err := u.verify(ctx, parts[0], parts[1], parts[2]); err != nil {
			return nil, err
		}
	}
	payload, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload is not base64url without padding: %w", ErrMalformed, err)
	}
	var s Secret
	if err := json.Unmarshal(payload, &s); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("%w: payload is not JSON: %w", ErrMalformed, err)
		}
		return nil, err
	}
	if s.Version != Version {
		return nil, fmt.Errorf("%w: version %q (want %q)", ErrUnsupported, s.Version, Version)
	}
	return &s, nil
}

// verify checks the JWS header and the ES256 signature.
func (u *Unsealer) verify(ctx context.Context, header, payload, signature string) error {
	raw, err := b64.DecodeString(header)
	if err != nil {
		return fmt.Errorf("%w: JWS header is not base64url without padding: %w", ErrMalformed, err)
	}
	var h map[string]json.RawMessage
	if err := json.Unmarshal(raw, &h); err != nil {
		return fmt.Errorf("%w: JWS header is not a JSON object: %w", ErrMalformed, err)
	}
	var alg, kid string
	if a, ok := h["alg"]; !ok || json.Unmarshal(a, &alg) != nil {
		return fmt.Errorf("%w: JWS header has no string \"alg\"", ErrMalformed)
	}
	if alg != string(jose.ES256) {
		return fmt.Errorf("%w: JWS algorithm %q (only ES256)", ErrUnsupported, alg)
	}
	if _, ok := h["crit"]; ok {
		return fmt.Errorf("%w: JWS header has \"crit\"; no extension is supported", ErrUnsupported)
	}
	if k, ok := h["kid"]; !ok || json.Unmarshal(k, &kid) != nil || kid == "" {
		return fmt.Errorf("%w: JWS header has no string \"kid\"", ErrMalformed)
	}
	sig, err := b64.DecodeString(signature)
	if err != nil {
		return fmt.Errorf("%w: JWS signature is not base64url without padding: %w", ErrMalformed, err)
	}
	if len(sig) != 64 {
		return fmt.Errorf("%w: ES256 signature is %d bytes, want 64", ErrMalformed, len(sig))
	}
	pub, err := u.key(ctx, kid)
	if err != nil {
		return err
	}
	digest := sha256.Sum256([]byte(header + "." + payload))
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return fmt.Errorf("%w: ES256 signature does not verify with key %q", ErrVerification, kid)
	}
	return nil
}

// key fetches and parses the verification key kid names.
func (u *Unsealer) key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	var raw []byte
	if strings.Contains(kid, "://") {
		uri, err := resource.Parse(kid)
		if err != nil {
			return nil, fmt.Errorf("%w: kid: %w", ErrMalformed, err)
		}
		if u.KBC == nil {
			return nil, fmt.Errorf("%w: fetch verification key %s: no KBC configured", ErrVerification, uri)
		}
		raw, err = u.KBC.GetResource(ctx, uri)
		if err != nil {
			return nil, fmt.Errorf("fetch verification key %s: %w", uri, err)
		}
	} else {
		var err error
		if raw, err = u.readKey(kid); err != nil {
			return nil, err
		}
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("%w: verification key %q is not a JWK: %w", ErrVerification, kid, err)
	}
	var pub *ecdsa.PublicKey
	switch k := jwk.Key.(type) {
	case *ecdsa.PublicKey:
		pub = k
	case *ecdsa.PrivateKey:
		pub = &k.PublicKey
	}
	if pub == nil || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: verification key %q is not an EC P-256 key", ErrVerification, kid)
	}
	return pub, nil
}

// readKey reads the key file kid names inside the key directory.
func (u *Unsealer) readKey(kid string) ([]byte, error) {
	dir := u.KeyDir
	if dir == "" {
		dir = DefaultKeyDir
	}
	if !filepath.IsLocal(kid) {
		return nil, fmt.Errorf("%w: kid %q is neither a resource URI nor a file name inside %s", ErrVerification, kid, dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: read verification key %q: %w", ErrVerification, kid, err)
	}
	defer root.Close()
	// os.Root also refuses symlinks that lead out of the directory.
	f, err := root.Open(kid)
	if err != nil {
		return nil, fmt.Errorf("%w: read verification key %q in %s: %w", ErrVerification, kid, dir, err)
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxKeySize+1))
	if err == nil && len(raw) > maxKeySize {
		err = fmt.Errorf("larger than %d bytes", maxKeySize)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read verification key %q in %s: %w", ErrVerification, kid, dir, err)
	}
	return raw, nil
}

// isKBS reports whether a provider name is "kbs"; upstream matches
// provider names case-insensitively.
func isKBS(provider string) bool { return strings.EqualFold(provider, ProviderKBS) }

// fetch gets a resource through the KBC.
func (u *Unsealer) fetch(ctx context.Context, what, name string) ([]byte, error) {
	uri, err := resource.Parse(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, what, err)
	}
	if u.KBC == nil {
		return nil, fmt.Errorf("fetch %s %s: no KBC configured", what, uri)
	}
	data, err := u.KBC.GetResource(ctx, uri)
	if err != nil {
		return nil, fmt.Errorf("fetch %s %s: %w", what, uri, err)
	}
	return data, nil
}

func (u *Unsealer) vault(ctx context.Context, v *Vault) ([]byte, error) {
	if !isKBS(v.Provider) {
		return nil, fmt.Errorf("%w: vault provider %q is not supported (only %q)", ErrUnsupported, v.Provider, ProviderKBS)
	}
	return u.fetch(ctx, "vault secret", v.Name)
}

// std is standard base64 with padding, as envelope fields use.
var std = base64.StdEncoding.Strict()

func (u *Unsealer) envelope(ctx context.Context, e *Envelope) ([]byte, error) {
	if !isKBS(e.Provider) {
		return nil, fmt.Errorf("%w: envelope provider %q is not supported (only guestd's %q)", ErrUnsupported, e.Provider, ProviderKBS)
	}
	ivSize, err := ivSize(e.WrapType)
	if err != nil {
		return nil, err
	}
	wrapped, err := std.DecodeString(e.EncryptedKey)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_key is not standard base64: %w", ErrMalformed, err)
	}
	iv, err := std.DecodeString(e.IV)
	if err != nil {
		return nil, fmt.Errorf("%w: iv is not standard base64: %w", ErrMalformed, err)
	}
	if len(iv) != ivSize {
		return nil, fmt.Errorf("%w: %s needs a %d-byte iv, got %d", ErrMalformed, e.WrapType, ivSize, len(iv))
	}
	data, err := std.DecodeString(e.EncryptedData)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_data is not standard base64: %w", ErrMalformed, err)
	}
	kek, err := u.fetch(ctx, "envelope key", e.KeyID)
	if err != nil {
		return nil, err
	}
	defer clear(kek)
	if len(kek) != keySize {
		return nil, fmt.Errorf("%w: envelope key %s is %d bytes, want %d", ErrUnsupported, e.KeyID, len(kek), keySize)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	dek, err := josecipher.KeyUnwrap(block, wrapped)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_key does not unwrap under %s: %w", ErrVerification, e.KeyID, err)
	}
	defer clear(dek)
	if len(dek) != keySize {
		return nil, fmt.Errorf("%w: data key is %d bytes, want %d", ErrMalformed, len(dek), keySize)
	}
	return decrypt(dek, iv, data, e.WrapType)
}

// ivSize returns the IV size of a wrap type.
func ivSize(wrapType string) (int, error) {
	switch wrapType {
	case A256GCM:
		return 12, nil
	case A256CTR:
		return aes.BlockSize, nil
	}
	return 0, fmt.Errorf("%w: wrap_type %q (want %s or %s)", ErrUnsupported, wrapType, A256GCM, A256CTR)
}

// decrypt decrypts data under the data key; the caller checked the sizes.
func decrypt(key, iv, data []byte, wrapType string) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if wrapType == A256CTR {
		out := make([]byte, len(data))
		cipher.NewCTR(block, iv).XORKeyStream(out, data)
		return out, nil
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	out, err := gcm.Open(nil, iv, data, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: encrypted_data does not decrypt under the data key (tampered)", ErrVerification)
	}
	return out, nil
}
