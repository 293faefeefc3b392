package kbs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/guestd/guestd/kbc/protocol"
)

// The fixed members of the EAR attestation token, with the values trustee's
// attestation service uses by default (the build name is ours).
const (
	EARProfile     = "tag:github.com,2024:confidential-containers/Trustee"
	EARIssuer      = "CoCo-Attestation-Service"
	EARDeveloper   = "https://confidentialcontainers.org"
	EARBuild       = "guestd test-kbs"
	EARPolicyID    = "default"
	EARStatus      = "affirming"
	AnnotatedClaim = "ear.veraison.annotated-evidence"
)

// TeePubKeyPath is the JSON pointer at which trustee finds the TEE key in an
// EAR token, and at which this KBS puts it.
const TeePubKeyPath = "/submods/cpu0/" + AnnotatedClaim + "/runtime_data_claims/tee-pubkey"

// TokenLeeway is the clock skew allowed when checking a token's exp (and
// nbf): trustee verifies tokens with the jsonwebtoken crate's default
// validation, whose leeway is 60 s. Admin tokens get the same.
const TokenLeeway = 60 * time.Second

// trustVector is the AR4SI vector of an appraisal that passed: what
// trustee's default CPU policy gives the sample TEE when every reference
// value matches (executables 3, hardware 2, configuration 2), so the status
// is affirming.
func trustVector() map[string]int {
	return map[string]int{
		"instance-identity": 0,
		"configuration":     2,
		"executables":       3,
		"file-system":       0,
		"hardware":          2,
		"runtime-opaque":    0,
		"storage-opaque":    0,
		"sourced-data":      0,
	}
}

// reservedAnnotation reports whether an annotated-evidence member is one of
// those around the TEE's claims; every other member is a TEE name.
func reservedAnnotation(name string) bool {
	switch name {
	case "report_data", "runtime_data_claims", "init_data", "init_data_claims":
		return true
	}
	return false
}

// tokenKey signs and verifies the attestation tokens of one Server with an
// ephemeral P-256 key, as trustee's attestation service does when no signer
// is configured. Tokens carry the public key in the header "jwk"; the KBS
// itself only trusts its own key, not the header.
type tokenKey struct {
	priv *ecdsa.PrivateKey
	jwk  map[string]string
}

func newTokenKey() (*tokenKey, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate token signing key: %w", err)
	}
	raw, err := priv.PublicKey.Bytes() // uncompressed point: 0x04 || X || Y
	if err != nil {
		return nil, fmt.Errorf("encode token signing key: %w", err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return &tokenKey{priv: priv, jwk: map[string]string{
		"kty": "EC", "crv": "P-256", "alg": string(jose.ES256),
		"x": enc(raw[1:33]), "y": enc(raw[33:65]),
	}}, nil
}

// sign returns the compact JWS of claims, with header
// {"alg":"ES256","jwk":{...},"typ":"JWT"}.
func (k *tokenKey) sign(claims any) (string, error) {
	opts := (&jose.SignerOptions{}).WithType("JWT").WithHeader("jwk", k.jwk)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, opts)
	if err != nil {
		return "", fmt.Errorf("sign attestation token: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sign attestation token: %w", err)
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("sign attestation token: %w", err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign attestation token: %w", err)
	}
	return tok, nil
}

// verify checks a token's ES256 signature against this key and its exp
// (required) and nbf (if present) against now, and returns its claims.
func (k *tokenKey) verify(token string, now time.Time) (map[string]any, error) {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("parse attestation token: %w", err)
	}
	var claims map[string]any
	var std jwt.Claims
	if err := tok.Claims(&k.priv.PublicKey, &claims, &std); err != nil {
		return nil, fmt.Errorf("verify attestation token: %w", err)
	}
	if err := checkTimes(std, now, true); err != nil {
		return nil, fmt.Errorf("verify attestation token: %w", err)
	}
	return claims, nil
}

// checkTimes applies exp and nbf with TokenLeeway, like jsonwebtoken. It
// does not check iat (jsonwebtoken does not either).
func checkTimes(c jwt.Claims, now time.Time, requireExp bool) error {
	if c.Expiry == nil {
		if requireExp {
			return errors.New("missing required claim: exp")
		}
	} else if now.Add(-TokenLeeway).After(c.Expiry.Time()) {
		return fmt.Errorf("token expired at %s", c.Expiry.Time().UTC().Format(time.RFC3339))
	}
	if c.NotBefore != nil && now.Add(TokenLeeway).Before(c.NotBefore.Time()) {
		return fmt.Errorf("token not valid before %s", c.NotBefore.Time().UTC().Format(time.RFC3339))
	}
	return nil
}

// appraisal is the outcome of verifying one TEE's evidence: what goes into
// one submod of the EAR.
type appraisal struct {
	tee      string
	claims   map[string]any  // the verifier's claims
	runtime  any             // runtime_data_claims
	initData *parsedInitData // primary evidence only
}

// annotatedEvidence lays out ear.veraison.annotated-evidence as trustee's
// transform_claims does: the verifier's report_data (and init_data) claims
// move to the top, the rest sits under the TEE name, next to the runtime
// data the evidence bound and, when init-data was given, its digest (hex)
// and claims.
func (a appraisal) annotatedEvidence() map[string]any {
	out := map[string]any{"runtime_data_claims": a.runtime}
	tee := make(map[string]any, len(a.claims))
	for k, v := range a.claims {
		tee[k] = v
	}
	if rd, ok := tee["report_data"]; ok {
		delete(tee, "report_data")
		out["report_data"] = rd
	}
	if id, ok := tee["init_data"]; ok {
		delete(tee, "init_data")
		out["init_data"] = id
	}
	if a.initData != nil {
		out["init_data"] = hex.EncodeToString(a.initData.digest)
		out["init_data_claims"] = a.initData.claims
	}
	out[a.tee] = tee
	return out
}

func (a appraisal) submod() map[string]any {
	return map[string]any{
		"ear.status":                 EARStatus,
		"ear.trustworthiness-vector": trustVector(),
		"ear.appraisal-policy-id":    EARPolicyID,
		AnnotatedClaim:               a.annotatedEvidence(),
	}
}

// earClaims builds the token payload: cpu0 for the primary evidence, gpu0,
// gpu1, ... for the additional devices in the order given.
func earClaims(now time.Time, lifetime time.Duration, primary appraisal, devices []appraisal) map[string]any {
	submods := map[string]any{"cpu0": primary.submod()}
	for i, d := range devices {
		submods[fmt.Sprintf("gpu%d", i)] = d.submod()
	}
	return map[string]any{
		"eat_profile": EARProfile,
		"iat":         now.Unix(),
		"exp":         now.Add(lifetime).Unix(),
		"iss":         EARIssuer,
		"ear.verifier-id": map[string]string{
			"developer": EARDeveloper,
			"build":     EARBuild,
		},
		"submods": submods,
	}
}

// pointer resolves an RFC 6901 JSON pointer in decoded JSON.
func pointer(doc any, ptr string) (any, bool) {
	if ptr == "" {
		return doc, true
	}
	if !strings.HasPrefix(ptr, "/") {
		return nil, false
	}
	cur := doc
	for _, tok := range strings.Split(ptr[1:], "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[tok]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// teePubKey takes the TEE key out of verified token claims.
func teePubKey(claims map[string]any) (protocol.TeePubKey, error) {
	v, ok := pointer(claims, TeePubKeyPath)
	if !ok {
		return protocol.TeePubKey{}, errors.New("Tee public key not found in Attestation Token")
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return protocol.TeePubKey{}, fmt.Errorf("Failed to parse Tee public key: %w", err)
	}
	m, err := object(raw)
	if err != nil {
		return protocol.TeePubKey{}, fmt.Errorf("Failed to parse Tee public key: %w", err)
	}
	key, err := decodeTeePubKey(m)
	if err != nil {
		return protocol.TeePubKey{}, fmt.Errorf("Failed to parse Tee public key: %w", err)
	}
	return key, nil
}

// tokenTee returns the TEE the token's primary evidence came from: the one
// annotated-evidence member of cpu0 that is not a reserved name.
func tokenTee(claims map[string]any) string {
	v, ok := pointer(claims, "/submods/cpu0/"+AnnotatedClaim)
	if !ok {
		return ""
	}
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	tee := ""
	for k := range m {
		if reservedAnnotation(k) {
			continue
		}
		if tee != "" {
			return ""
		}
		tee = k
	}
	return tee
}
