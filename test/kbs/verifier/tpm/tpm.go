package tpm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"

	"github.com/guestd/guestd/attester"
	tpmattester "github.com/guestd/guestd/attester/tpm"
)

// initDataPCR is the PCR upstream extends with the init-data digest; trustee
// reports it as the init_data claim.
const initDataPCR = 8

// Sentinel causes, for errors.Is.
var (
	ErrAKNotTrusted      = errors.New("AK not trusted")
	ErrQuoteSignature    = errors.New("quote signature")
	ErrNonceMismatch     = errors.New("nonce mismatch")
	ErrPCRDigestMismatch = errors.New("PCR digest mismatch")
)

// Options configures New. The trusted AKs are the union of both fields.
type Options struct {
	// TrustedAKs are AK public keys (as x509.MarshalPKIXPublicKey takes
	// them, e.g. *rsa.PublicKey).
	TrustedAKs []crypto.PublicKey
	// TrustedAKsPEM holds zero or more PEM "PUBLIC KEY" blocks, as in
	// trustee's trusted AK files.
	TrustedAKsPEM []byte
}

// Verifier verifies TPM evidence against a fixed set of trusted AKs.
type Verifier struct {
	trusted map[string]bool // DER SubjectPublicKeyInfo
}

// New returns a verifier trusting the AKs in opts. At least one is needed.
func New(opts Options) (*Verifier, error) {
	v := &Verifier{trusted: map[string]bool{}}
	for i, k := range opts.TrustedAKs {
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return nil, fmt.Errorf("trusted AK %d: %w", i, err)
		}
		v.trusted[string(der)] = true
	}
	rest := opts.TrustedAKsPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("trusted AK PEM: block type %q, want PUBLIC KEY", b.Type)
		}
		if _, err := x509.ParsePKIXPublicKey(b.Bytes); err != nil {
			return nil, fmt.Errorf("trusted AK PEM: %w", err)
		}
		v.trusted[string(b.Bytes)] = true
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trusted AK PEM: trailing data that is not a PEM block")
	}
	if len(v.trusted) == 0 {
		return nil, errors.New("TPM verifier: no trusted AKs")
	}
	return v, nil
}

// Verify checks TPM evidence and that it binds reportData. The claims are
// trustee's: report_data (hex of the quote's qualifying data), init_data
// (hex of PCR 8), ak_public (std base64 DER) and pcr00 to pcr23 (hex).
func (v *Verifier) Verify(ctx context.Context, evidence json.RawMessage, reportData []byte) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("verify TPM evidence: %w", err)
	}
	p, err := tpmattester.ParseEvidence(evidence)
	if err != nil {
		return nil, fmt.Errorf("verify TPM evidence: %w", err)
	}
	if !v.trusted[string(p.AKPublicDER)] {
		return nil, fmt.Errorf("verify TPM evidence: %w: AK %x is not in the trusted list", ErrAKNotTrusted, sha256.Sum256(p.AKPublicDER))
	}
	if err := checkSignature(p); err != nil {
		return nil, fmt.Errorf("verify TPM evidence: %w: %w", ErrQuoteSignature, err)
	}
	if err := checkPCRs(p); err != nil {
		return nil, fmt.Errorf("verify TPM evidence: %w: %w", ErrPCRDigestMismatch, err)
	}
	want, err := attester.Regularize(reportData, tpmattester.ReportDataSize, true)
	if err != nil {
		return nil, fmt.Errorf("verify TPM evidence: %w", err)
	}
	if subtle.ConstantTimeCompare(p.Nonce, want) != 1 {
		return nil, fmt.Errorf("verify TPM evidence: %w: quote has %x, want %x", ErrNonceMismatch, p.Nonce, want)
	}
	claims := map[string]any{
		"report_data": hex.EncodeToString(p.Nonce),
		"init_data":   hex.EncodeToString(p.PCRs[initDataPCR]),
		"ak_public":   base64.StdEncoding.EncodeToString(p.AKPublicDER),
	}
	for i, pcr := range p.PCRs {
		claims[fmt.Sprintf("pcr%02d", i)] = hex.EncodeToString(pcr)
	}
	return claims, nil
}

// checkSignature checks the RSASSA-SHA256 signature over the quote message.
func checkSignature(p *tpmattester.Parsed) error {
	pub, ok := p.AKPublic.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("AK is a %T, want an RSA key", p.AKPublic)
	}
	if tpm2.TPMAlgID(p.SigHash) != tpm2.TPMAlgSHA256 {
		return fmt.Errorf("signature hash %#04x is not SHA-256", p.SigHash)
	}
	digest := sha256.Sum256(p.Message)
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], p.Sig); err != nil {
		return fmt.Errorf("RSASSA-SHA256 check with the AK: %w", err)
	}
	return nil
}

// checkPCRs checks that the quote covers exactly SHA-256 PCRs 0-23 and that
// its digest is the SHA-256 of the reported values in index order.
func checkPCRs(p *tpmattester.Parsed) error {
	if len(p.Selection) != 1 || tpm2.TPMAlgID(p.Selection[0].Hash) != tpm2.TPMAlgSHA256 || len(p.Selection[0].PCRs) != tpmattester.NumPCRs {
		return fmt.Errorf("quote selects %v, want SHA-256 PCRs 0-23", p.Selection)
	}
	for i, idx := range p.Selection[0].PCRs {
		if idx != i {
			return fmt.Errorf("quote selects %v, want SHA-256 PCRs 0-23", p.Selection)
		}
	}
	h := sha256.New()
	for _, v := range p.PCRs {
		h.Write(v)
	}
	if subtle.ConstantTimeCompare(h.Sum(nil), p.PCRDigest) != 1 {
		return errors.New("the reported PCR values do not hash to the quoted digest")
	}
	return nil
}
