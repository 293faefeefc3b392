package kbs

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// AdminRole is the role MintAdminToken puts in admin tokens; trustee since
// v0.21 requires a role claim, earlier versions ignore it.
const AdminRole = "admin"

// MintAdminToken returns an admin token as trustee's tooling mints one: a
// JWT with header {"alg":"EdDSA","typ":"JWT"} and claims iat, exp
// (iat+lifetime) and role, signed with the Ed25519 admin key.
func MintAdminToken(priv ed25519.PrivateKey, now time.Time, lifetime time.Duration) (string, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return "", fmt.Errorf("mint admin token: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: priv}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("mint admin token: %w", err)
	}
	claims := map[string]any{
		"iat":  now.Unix(),
		"exp":  now.Add(lifetime).Unix(),
		"role": AdminRole,
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("mint admin token: %w", err)
	}
	return tok, nil
}

// bearer returns the token of an "Authorization: Bearer <token>" header.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	tok = strings.TrimSpace(tok)
	return tok, ok && tok != ""
}

// checkAdmin authenticates an admin request: an EdDSA JWT signed by the
// admin key, with an exp that has not passed and nbf and iat (when present)
// that are not in the future, each with TokenLeeway. The error reads as
// trustee's admin errors do.
func (s *Server) checkAdmin(r *http.Request) error {
	if s.cfg.AdminKey == nil {
		return denied("the admin API is disabled: no admin key is configured")
	}
	tok, ok := bearer(r)
	if !ok {
		return errors.New("Failed to parse HTTP Auth Bearer header")
	}
	jws, err := jwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		return denied("token is not an EdDSA JWT: %v", err)
	}
	if err := jws.Claims(s.cfg.AdminKey); err != nil {
		return denied("token does not verify with the admin key: %v", err)
	}
	var c jwt.Claims
	if err := jws.UnsafeClaimsWithoutVerification(&c); err != nil { // verified above
		return denied("token claims: %v", err)
	}
	now := s.cfg.Now()
	if err := checkTimes(c, now, true); err != nil {
		return denied("%v", err)
	}
	if c.IssuedAt != nil && now.Add(TokenLeeway).Before(c.IssuedAt.Time()) {
		return denied("token issued in the future (iat %s)", c.IssuedAt.Time().UTC().Format(time.RFC3339))
	}
	return nil
}

// setPolicy handles POST /kbs/v0/resource-policy: {"policy": "<base64url
// without padding of a policy document>"}, as trustee takes it (its
// documents are Rego; ours are the JSON format of ParsePolicy).
func (s *Server) setPolicy(w http.ResponseWriter, r *http.Request, body []byte) *kbsError {
	if err := s.checkAdmin(r); err != nil {
		s.stats.adminFailed.Add(1)
		return errAdminEndpoint("resource-policy", err)
	}
	var req map[string]json.RawMessage
	if err := json.Unmarshal(body, &req); err != nil {
		return errParsePolicy(errors.New("Illegal SetPolicy Request Json"))
	}
	raw, ok := req["policy"]
	if !ok {
		return errParsePolicy(errors.New("No `policy` field inside SetPolicy Request Json"))
	}
	var b64 string
	if err := json.Unmarshal(raw, &b64); err != nil {
		return errParsePolicy(errors.New("`policy` field is not a string in SetPolicy Request Json"))
	}
	doc, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return errParsePolicy(fmt.Errorf("Failed to decode policy: %w", err))
	}
	p, err := ParsePolicy(doc)
	if err != nil {
		return errParsePolicy(err)
	}
	s.SetPolicy(p)
	s.log.Info("resource policy replaced")
	w.WriteHeader(http.StatusOK)
	return nil
}

// getPolicy handles GET /kbs/v0/resource-policy: the policy in force, in
// the format ParsePolicy reads.
func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) *kbsError {
	if err := s.checkAdmin(r); err != nil {
		s.stats.adminFailed.Add(1)
		return errAdminEndpoint("resource-policy", err)
	}
	return writeJSON(w, s.Policy(), nil)
}
