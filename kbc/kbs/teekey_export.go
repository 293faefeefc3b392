package kbs

import (
	"context"
	"fmt"
)

// TokenWithKeyPEM returns the session's attestation token, exactly as
// Attest does (the cached one while it is valid, else after one new
// attestation), together with the PEM of the TEE private key that token
// binds (see teekey.Key.PrivatePEM).
//
// It exists only for upstream's legacy GetToken("kbs") answer
// {"token","tee_keypair"}. The key is the key of the session every
// GetResource of this Client uses, so whoever holds it and the token can
// fetch and open every resource the KBS policy releases to this TEE until
// the token expires. The caller owns the PEM and should zero it after use.
func (c *Client) TokenWithKeyPEM(ctx context.Context) (*Token, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tok, key, err := c.session(ctx, nil)
	if err != nil {
		return nil, nil, err
	}
	pem, err := key.PrivatePEM()
	if err != nil {
		return nil, nil, fmt.Errorf("kbs token: %w", err)
	}
	return tok, pem, nil
}
