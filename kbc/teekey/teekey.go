package teekey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/guestd/guestd/kbc/protocol"
)

// Algorithm is the TEE key algorithm as the AA config spells it
// (`[token_configs.kbs] tee_key_algorithm`).
type Algorithm string

// The supported TEE key algorithms.
const (
	ECP256     Algorithm = "ECDH-ES+A256KW-P256" // default, as upstream
	ECP521     Algorithm = "ECDH-ES+A256KW-P521"
	RSAOAEP256 Algorithm = "RSA-OAEP-256"
)

// rsaBits is the RSA modulus size, as guest-components uses.
const rsaBits = 2048

// ParseAlgorithm accepts the config names; "" means the default, P-256.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case "":
		return ECP256, nil
	case ECP256, ECP521, RSAOAEP256:
		return a, nil
	}
	return "", fmt.Errorf("TEE key algorithm %q is not supported (want %s, %s or %s)", s, ECP256, ECP521, RSAOAEP256)
}

// Key is an ephemeral TEE key pair.
type Key struct {
	alg  Algorithm
	priv crypto.PrivateKey // *ecdsa.PrivateKey or *rsa.PrivateKey
	pub  protocol.TeePubKey
}

// Generate makes a new key pair.
func Generate(alg Algorithm) (*Key, error) {
	switch alg {
	case ECP256, ECP521:
		curve, crv := elliptic.P256(), "P-256"
		if alg == ECP521 {
			curve, crv = elliptic.P521(), "P-521"
		}
		priv, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate %s TEE key: %w", alg, err)
		}
		size := (curve.Params().BitSize + 7) / 8
		return &Key{alg: alg, priv: priv, pub: protocol.TeePubKey{
			Kty: "EC", Crv: crv, Alg: string(jose.ECDH_ES_A256KW),
			X: b64(priv.X.FillBytes(make([]byte, size))),
			Y: b64(priv.Y.FillBytes(make([]byte, size))),
		}}, nil
	case RSAOAEP256:
		priv, err := rsa.GenerateKey(rand.Reader, rsaBits)
		if err != nil {
			return nil, fmt.Errorf("generate %s TEE key: %w", alg, err)
		}
		return &Key{alg: alg, priv: priv, pub: protocol.TeePubKey{
			Kty: "RSA", Alg: string(jose.RSA_OAEP_256),
			N: b64(priv.N.Bytes()),
			E: b64(big.NewInt(int64(priv.E)).Bytes()),
		}}, nil
	}
	return nil, fmt.Errorf("generate TEE key: algorithm %q is not supported", alg)
}

// Algorithm returns the key's algorithm.
func (k *Key) Algorithm() Algorithm { return k.alg }

// Public returns the public key as the protocol's tee-pubkey JWK.
func (k *Key) Public() protocol.TeePubKey { return k.pub }

// keyAlgorithm is the JWE "alg" a KBS must use for this key.
func (k *Key) keyAlgorithm() jose.KeyAlgorithm {
	if k.alg == RSAOAEP256 {
		return jose.RSA_OAEP_256
	}
	return jose.ECDH_ES_A256KW
}

// Decrypt opens a resource sealed to this key. It takes only what the
// protocol allows: "alg" ECDH-ES+A256KW for EC keys or RSA-OAEP-256 for RSA
// keys, "enc" A256GCM, both in the integrity-protected header, and the
// received protected header as the AES-GCM additional data.
func (k *Key) Decrypt(r protocol.Response) ([]byte, error) {
	raw, err := base64.RawURLEncoding.DecodeString(r.Protected)
	if err != nil {
		return nil, fmt.Errorf("open sealed resource: protected header is not base64url: %w", err)
	}
	var hdr struct {
		Alg string `json:"alg"`
		Enc string `json:"enc"`
	}
	if err := json.Unmarshal(raw, &hdr); err != nil {
		return nil, fmt.Errorf("open sealed resource: protected header is not JSON: %w", err)
	}
	if want := k.keyAlgorithm(); hdr.Alg != string(want) {
		return nil, fmt.Errorf("open sealed resource: key algorithm %q refused: a %s TEE key takes only %s", hdr.Alg, k.alg, want)
	}
	if hdr.Enc != string(jose.A256GCM) {
		return nil, fmt.Errorf("open sealed resource: content encryption %q refused: only A256GCM is accepted", hdr.Enc)
	}
	body, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("open sealed resource: %w", err)
	}
	jwe, err := jose.ParseEncryptedJSON(string(body), []jose.KeyAlgorithm{k.keyAlgorithm()}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, fmt.Errorf("open sealed resource: parse JWE: %w", err)
	}
	plain, err := jwe.Decrypt(k.priv)
	if err != nil {
		return nil, fmt.Errorf("open sealed resource: decrypt JWE (%s, A256GCM): %w", hdr.Alg, err)
	}
	return plain, nil
}

// ParsePublic converts a tee-pubkey JWK into a Go public key (*ecdsa.PublicKey
// or *rsa.PublicKey), checking that it is a key this package could have made.
func ParsePublic(k protocol.TeePubKey) (crypto.PublicKey, error) {
	switch k.Kty {
	case "EC":
		if k.Alg != string(jose.ECDH_ES_A256KW) {
			return nil, fmt.Errorf("tee-pubkey: EC key with alg %q, want %s", k.Alg, jose.ECDH_ES_A256KW)
		}
		var curve elliptic.Curve
		switch k.Crv {
		case "P-256":
			curve = elliptic.P256()
		case "P-521":
			curve = elliptic.P521()
		default:
			return nil, fmt.Errorf("tee-pubkey: curve %q is not supported (want P-256 or P-521)", k.Crv)
		}
		size := (curve.Params().BitSize + 7) / 8
		x, err := unb64(k.X, "x", size)
		if err != nil {
			return nil, err
		}
		y, err := unb64(k.Y, "y", size)
		if err != nil {
			return nil, err
		}
		pub := &ecdsa.PublicKey{Curve: curve, X: new(big.Int).SetBytes(x), Y: new(big.Int).SetBytes(y)}
		if _, err := pub.ECDH(); err != nil {
			return nil, fmt.Errorf("tee-pubkey: point is not on %s: %w", k.Crv, err)
		}
		return pub, nil
	case "RSA":
		if k.Alg != string(jose.RSA_OAEP_256) {
			return nil, fmt.Errorf("tee-pubkey: RSA key with alg %q, want %s", k.Alg, jose.RSA_OAEP_256)
		}
		n, err := unb64(k.N, "n", 0)
		if err != nil {
			return nil, err
		}
		e, err := unb64(k.E, "e", 0)
		if err != nil {
			return nil, err
		}
		if len(n)*8 < 2048 || len(n) > 1024 || len(e) == 0 || len(e) > 4 {
			return nil, fmt.Errorf("tee-pubkey: RSA key of %d bits with a %d-byte exponent is not acceptable", len(n)*8, len(e))
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.E < 3 || pub.E%2 == 0 {
			return nil, fmt.Errorf("tee-pubkey: RSA exponent %d is not acceptable", pub.E)
		}
		return pub, nil
	}
	return nil, fmt.Errorf("tee-pubkey: key type %q is not supported (want EC or RSA)", k.Kty)
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(s, field string, size int) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("tee-pubkey: %s is not base64url: %w", field, err)
	}
	if size > 0 && len(b) != size {
		return nil, fmt.Errorf("tee-pubkey: %s is %d bytes, want %d", field, len(b), size)
	}
	return b, nil
}
