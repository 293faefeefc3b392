package kbs

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"

	josecipher "github.com/go-jose/go-jose/v4/cipher"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
)

// Seal encrypts plaintext to a TEE key as trustee does: A256GCM content
// encryption under a random 32-byte key and 12-byte IV, the key wrapped with
// ECDH-ES+A256KW (EC keys) or RSA-OAEP-256 (RSA keys), and the protected
// header serialised exactly as trustee writes it (alg, enc, then epk with
// crv, kty, x, y), because Rust clients re-serialise the header to compute
// the AAD and would fail the tag check on any other order.
func Seal(key protocol.TeePubKey, plaintext []byte) (protocol.Response, error) {
	pub, err := teekey.ParsePublic(key)
	if err != nil {
		return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
	}
	cek := make([]byte, 32)
	if _, err := rand.Read(cek); err != nil {
		return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
	}
	var header string
	var encryptedKey []byte
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		eph, err := ecdsa.GenerateKey(pub.Curve, rand.Reader)
		if err != nil {
			return protocol.Response{}, fmt.Errorf("seal resource: ephemeral key: %w", err)
		}
		kek := josecipher.DeriveECDHES("ECDH-ES+A256KW", nil, nil, eph, pub, 32)
		block, err := aes.NewCipher(kek)
		if err != nil {
			return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
		}
		if encryptedKey, err = josecipher.KeyWrap(block, cek); err != nil {
			return protocol.Response{}, fmt.Errorf("seal resource: wrap content key: %w", err)
		}
		size := (pub.Curve.Params().BitSize + 7) / 8
		header = fmt.Sprintf(`{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":%q,"kty":"EC","x":%q,"y":%q}}`,
			key.Crv, b64(eph.X.FillBytes(make([]byte, size))), b64(eph.Y.FillBytes(make([]byte, size))))
	case *rsa.PublicKey:
		if encryptedKey, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, cek, nil); err != nil {
			return protocol.Response{}, fmt.Errorf("seal resource: wrap content key: %w", err)
		}
		header = `{"alg":"RSA-OAEP-256","enc":"A256GCM"}`
	default:
		return protocol.Response{}, fmt.Errorf("seal resource: unsupported key %T", pub)
	}
	protected := b64([]byte(header))
	block, err := aes.NewCipher(cek)
	if err != nil {
		return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
	}
	iv := make([]byte, gcm.NonceSize())
	if _, err := rand.Read(iv); err != nil {
		return protocol.Response{}, fmt.Errorf("seal resource: %w", err)
	}
	sealed := gcm.Seal(nil, iv, plaintext, []byte(protected))
	ct, tag := sealed[:len(sealed)-gcm.Overhead()], sealed[len(sealed)-gcm.Overhead():]
	return protocol.Response{
		Protected:    protected,
		EncryptedKey: b64(encryptedKey),
		IV:           b64(iv),
		Ciphertext:   b64(ct),
		Tag:          b64(tag),
	}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }
