package teekey

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// PrivatePEM exports the private key in the PEM form upstream's
// attestation agent hands out with a KBS token ("tee_keypair"): PKCS#8
// ("PRIVATE KEY") for EC keys and PKCS#1 ("RSA PRIVATE KEY") for RSA keys,
// the forms kbs_protocol's TeeKeyPair::from_pem reads back.
//
// This is the one way the private key leaves the package, and it exists
// only for legacy clients that open KBS responses themselves. Whoever holds
// the PEM can open every resource sealed to this key. The caller owns the
// result and should zero it after use.
func (k *Key) PrivatePEM() ([]byte, error) {
	var block *pem.Block
	switch priv := k.priv.(type) {
	case *ecdsa.PrivateKey:
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("export %s TEE key: %w", k.alg, err)
		}
		block = &pem.Block{Type: "PRIVATE KEY", Bytes: der}
	case *rsa.PrivateKey:
		block = &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv)}
	default:
		return nil, fmt.Errorf("export TEE key: key type %T is not supported", k.priv)
	}
	out := pem.EncodeToMemory(block)
	clear(block.Bytes)
	return out, nil
}
