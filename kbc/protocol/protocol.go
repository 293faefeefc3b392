package protocol

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/guestd/guestd/kbc/jcs"
)

// Version is the protocol version guestd speaks; trustee requires an exact
// match.
const Version = "0.4.0"

// ErrorTypePrefix starts the "type" of every ErrorInformation trustee sends;
// the error variant name follows it.
const ErrorTypePrefix = "https://github.com/confidential-containers/kbs/errors/"

// Request is the body of POST /kbs/v0/auth.
type Request struct {
	Version     string          `json:"version"`
	Tee         string          `json:"tee"`
	ExtraParams json.RawMessage `json:"extra-params"`
}

// RequestExtraParams is what guestd sends as Request.ExtraParams.
type RequestExtraParams struct {
	SupportedHashAlgorithms []HashAlgorithm `json:"supported-hash-algorithms"`
}

// Challenge is the KBS's answer to /auth.
type Challenge struct {
	// Nonce is 32 random bytes in standard base64 (for IBM SE it is a JSON
	// document instead, which guestd does not support).
	Nonce string `json:"nonce"`
	// ExtraParams is the JSON string "" for most TEEs, or an object that may
	// carry "selected-hash-algorithm".
	ExtraParams json.RawMessage `json:"extra-params"`
}

// HashAlgorithm returns the binding hash the KBS selected in the challenge,
// SHA-384 when it selected none.
func (c Challenge) HashAlgorithm() (HashAlgorithm, error) {
	raw := strings.TrimSpace(string(c.ExtraParams))
	if raw == "" || raw == "null" {
		return SHA384, nil
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(c.ExtraParams, &s); err != nil {
			return "", fmt.Errorf("challenge extra-params: %w", err)
		}
		if strings.TrimSpace(s) == "" {
			return SHA384, nil
		}
		// A string that itself holds a JSON object is how 0.1.0 peers sent it.
		var obj map[string]json.RawMessage
		if err := json.Unmarshal([]byte(s), &obj); err != nil {
			return "", fmt.Errorf("challenge extra-params: string %q is neither empty nor a JSON object", s)
		}
		return selectedHash(obj)
	case '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(c.ExtraParams, &obj); err != nil {
			return "", fmt.Errorf("challenge extra-params: %w", err)
		}
		return selectedHash(obj)
	}
	return "", fmt.Errorf("challenge extra-params: want a string or an object, got %.40s", raw)
}

func selectedHash(obj map[string]json.RawMessage) (HashAlgorithm, error) {
	v, ok := obj["selected-hash-algorithm"]
	if !ok {
		return SHA384, nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("challenge selected-hash-algorithm: %w", err)
	}
	return ParseHashAlgorithm(s)
}

// Attestation is the body of POST /kbs/v0/attest. Top-level keys are
// kebab-case; the composite evidence inside is snake_case.
type Attestation struct {
	InitData    *InitData         `json:"init-data"`
	RuntimeData RuntimeData       `json:"runtime-data"`
	TeeEvidence CompositeEvidence `json:"tee-evidence"`
}

// InitData carries the initdata document the guest was launched with.
type InitData struct {
	Format string `json:"format"` // "toml"
	Body   string `json:"body"`
}

// RuntimeData is what the evidence binds: the KBS nonce and the TEE key.
type RuntimeData struct {
	Nonce     string    `json:"nonce"`
	TeePubKey TeePubKey `json:"tee-pubkey"`
}

// CompositeEvidence is the primary TEE's evidence plus the evidence of any
// additional devices, the latter as a JSON string ("" when there is none).
type CompositeEvidence struct {
	Primary    json.RawMessage `json:"primary_evidence"`
	Additional string          `json:"additional_evidence"`
}

// TeePubKey is the public half of the TEE's ephemeral key as a JWK, in the
// kty-tagged form of kbs-types. Coordinates and modulus are base64url
// without padding.
type TeePubKey struct {
	Kty string `json:"kty"`
	Crv string `json:"crv,omitempty"`
	Alg string `json:"alg"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// TokenResponse is the KBS's answer to /attest.
type TokenResponse struct {
	Token string `json:"token"`
}

// ErrorInformation is the body of every KBS error response.
type ErrorInformation struct {
	Type   string `json:"type"`
	Detail string `json:"detail"`
}

// Variant returns the error variant name (the last element of Type).
func (e ErrorInformation) Variant() string {
	return strings.TrimPrefix(e.Type, ErrorTypePrefix)
}

// Response is a resource sealed to the TEE key: a JWE in flattened JSON
// serialisation, every member base64url without padding.
type Response struct {
	Protected    string `json:"protected"`
	EncryptedKey string `json:"encrypted_key"`
	IV           string `json:"iv"`
	Ciphertext   string `json:"ciphertext"`
	Tag          string `json:"tag"`
}

// HashAlgorithm names a binding hash as the protocol spells it.
type HashAlgorithm string

// The binding hashes guestd supports. (SM3, which upstream also offers, is
// not in the Go standard library and guestd does not advertise it.)
const (
	SHA256 HashAlgorithm = "sha256"
	SHA384 HashAlgorithm = "sha384"
	SHA512 HashAlgorithm = "sha512"
)

// SupportedHashAlgorithms is what guestd advertises in Request.ExtraParams.
var SupportedHashAlgorithms = []HashAlgorithm{SHA256, SHA384, SHA512}

// ParseHashAlgorithm accepts the protocol's hash names.
func ParseHashAlgorithm(s string) (HashAlgorithm, error) {
	switch h := HashAlgorithm(strings.ToLower(s)); h {
	case SHA256, SHA384, SHA512:
		return h, nil
	}
	return "", fmt.Errorf("hash algorithm %q is not supported (want sha256, sha384 or sha512)", s)
}

// Sum returns the digest of data.
func (h HashAlgorithm) Sum(data []byte) ([]byte, error) {
	switch h {
	case SHA256:
		s := sha256.Sum256(data)
		return s[:], nil
	case SHA384:
		s := sha512.Sum384(data)
		return s[:], nil
	case SHA512:
		s := sha512.Sum512(data)
		return s[:], nil
	}
	return nil, fmt.Errorf("hash algorithm %q is not supported", string(h))
}

// ReportData returns the digest the primary evidence must bind:
// H(JCS({"additional-evidence": additional, "nonce": nonce, "tee-pubkey": key})).
// The additional-evidence member is present even when it is "".
func ReportData(h HashAlgorithm, nonce string, key TeePubKey, additional string) ([]byte, error) {
	c, err := jcs.Marshal(struct {
		Additional string    `json:"additional-evidence"`
		Nonce      string    `json:"nonce"`
		TeePubKey  TeePubKey `json:"tee-pubkey"`
	}{additional, nonce, key})
	if err != nil {
		return nil, fmt.Errorf("runtime data: %w", err)
	}
	return h.Sum(c)
}

// DeviceReportData returns the digest additional devices' evidence binds:
// H(JCS(runtime data)).
func DeviceReportData(h HashAlgorithm, rd RuntimeData) ([]byte, error) {
	c, err := jcs.Marshal(rd)
	if err != nil {
		return nil, fmt.Errorf("runtime data: %w", err)
	}
	return h.Sum(c)
}
