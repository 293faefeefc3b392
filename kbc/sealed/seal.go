package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"

	josecipher "github.com/go-jose/go-jose/v4/cipher"
)

// Seal signs s with key, an EC P-256 private key, as an ES256 JWS whose
// header names kid, and returns "sealed.<header>.<payload>.<signature>".
// It is the tenant side of Unseal (upstream's "secret seal"); the guest
// finds the public key by kid.
func Seal(s *Secret, key *ecdsa.PrivateKey, kid string) (string, error) {
	if key == nil || key.Curve != elliptic.P256() {
		return "", errors.New("seal secret: the signing key must be an EC P-256 private key")
	}
	if kid == "" {
		return "", errors.New("seal secret: empty kid")
	}
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": kid})
	if err != nil {
		return "", fmt.Errorf("seal secret: %w", err)
	}
	payload, err := json.Marshal(s)
	if err != nil {
		return "", fmt.Errorf("seal secret: %w", err)
	}
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return "", fmt.Errorf("seal secret: sign: %w", err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return Prefix + input + "." + b64.EncodeToString(sig), nil
}

// NewKBSEnvelope encrypts plaintext for guestd's "kbs" envelope provider:
// a fresh 32-byte data key encrypts it with A256GCM under a fresh 12-byte
// iv, and kek, the 32-byte value of the KBS resource keyID, wraps the data
// key with A256KW (RFC 3394). Provision kek at keyID in the KBS.
func NewKBSEnvelope(keyID string, kek, plaintext []byte) (*Envelope, error) {
	if len(kek) != keySize {
		return nil, fmt.Errorf("seal envelope: KEK is %d bytes, want %d", len(kek), keySize)
	}
	dek := make([]byte, keySize)
	defer clear(dek)
	iv := make([]byte, 12)
	if _, err := rand.Read(dek); err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	kb, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	wrapped, err := josecipher.KeyWrap(kb, dek)
	if err != nil {
		return nil, fmt.Errorf("seal envelope: wrap data key: %w", err)
	}
	db, err := aes.NewCipher(dek)
	if err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	gcm, err := cipher.NewGCM(db)
	if err != nil {
		return nil, fmt.Errorf("seal envelope: %w", err)
	}
	return &Envelope{
		Provider:      ProviderKBS,
		KeyID:         keyID,
		EncryptedKey:  std.EncodeToString(wrapped),
		EncryptedData: std.EncodeToString(gcm.Seal(nil, iv, plaintext, nil)),
		WrapType:      A256GCM,
		IV:            std.EncodeToString(iv),
	}, nil
}
