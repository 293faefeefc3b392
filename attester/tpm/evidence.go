package tpm

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/google/go-tpm/tpm2"
)

// NumPCRs is the number of PCRs the quote covers: 0 to 23 of the SHA-256
// bank, as upstream.
const NumPCRs = 24

// Evidence is the TPM evidence exactly as trustee's TPM verifier takes it
// (trustee deps/verifier/src/tpm, produced upstream by guest-components
// attestation-agent/attester/src/tpm).
type Evidence struct {
	Quote Quote `json:"tpm_quote"`
	// AKPublic is the standard base64 of the AK's DER SubjectPublicKeyInfo.
	AKPublic string `json:"ak_public"`
}

// Quote is the wire form of a TPM2_Quote result.
type Quote struct {
	// Signature is the standard base64 of the marshalled TPMT_SIGNATURE.
	Signature string `json:"signature"`
	// Message is the standard base64 of the marshalled TPMS_ATTEST (the
	// contents of the TPM2B_ATTEST, without its size prefix): the signed
	// bytes.
	Message string `json:"message"`
	// PCRs are the SHA-256 PCRs 0 to 23, each as 64 lowercase hex digits.
	PCRs []string `json:"pcrs"`
}

// Parsed is TPM evidence decoded but not verified: nothing in it is
// authentic until the signature is checked against a trusted AK.
type Parsed struct {
	// AKPublicDER is the AK's DER SubjectPublicKeyInfo.
	AKPublicDER []byte
	// AKPublic is the AK parsed from AKPublicDER.
	AKPublic crypto.PublicKey
	// Message is the signed TPMS_ATTEST.
	Message []byte
	// SigAlg and SigHash are the TPM algorithm IDs of the signature scheme
	// and its hash. SigAlg is always RSASSA (0x0014), the only scheme
	// trustee takes; SigHash is SHA-256 (0x000B) from a conforming attester.
	SigAlg, SigHash uint16
	// Sig is the raw RSASSA (PKCS #1 v1.5) signature value.
	Sig []byte
	// Nonce is the quote's extraData (qualifying data).
	Nonce []byte
	// Selection is the quoted PCR selection.
	Selection []PCRSelection
	// PCRDigest is the quote's digest of the selected PCRs.
	PCRDigest []byte
	// PCRs are the PCR values the attester reported, in index order.
	PCRs [][]byte
}

// PCRSelection is one bank of a quote's PCR selection.
type PCRSelection struct {
	// Hash is the TPM algorithm ID of the bank.
	Hash uint16
	// PCRs lists the selected indices in ascending order.
	PCRs []int
}

// ParseEvidence decodes TPM evidence and the TPM structures in it. It checks
// only form: that the message is a TPM-generated quote, the signature a
// TPMT_SIGNATURE with an RSASSA signature, the AK a DER public key and that
// there are 24 SHA-256 PCR values. Verifiers must still check the signature, nonce and PCR
// digest.
func ParseEvidence(raw []byte) (*Parsed, error) {
	var ev Evidence
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("parse TPM evidence JSON: %w", err)
	}
	var p Parsed
	var err error
	if p.AKPublicDER, err = base64.StdEncoding.DecodeString(ev.AKPublic); err != nil {
		return nil, fmt.Errorf("decode TPM evidence ak_public: %w", err)
	}
	if p.AKPublic, err = x509.ParsePKIXPublicKey(p.AKPublicDER); err != nil {
		return nil, fmt.Errorf("parse TPM evidence ak_public: %w", err)
	}
	if p.Message, err = base64.StdEncoding.DecodeString(ev.Quote.Message); err != nil {
		return nil, fmt.Errorf("decode TPM quote message: %w", err)
	}
	if err := p.parseMessage(); err != nil {
		return nil, err
	}
	sigBytes, err := base64.StdEncoding.DecodeString(ev.Quote.Signature)
	if err != nil {
		return nil, fmt.Errorf("decode TPM quote signature: %w", err)
	}
	if err := p.parseSignature(sigBytes); err != nil {
		return nil, err
	}
	if len(ev.Quote.PCRs) != NumPCRs {
		return nil, fmt.Errorf("parse TPM quote pcrs: got %d values, want %d", len(ev.Quote.PCRs), NumPCRs)
	}
	for i, s := range ev.Quote.PCRs {
		v, err := hex.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("parse TPM quote PCR %d: %w", i, err)
		}
		if len(v) != 32 {
			return nil, fmt.Errorf("parse TPM quote PCR %d: %d bytes, want 32 (SHA-256)", i, len(v))
		}
		p.PCRs = append(p.PCRs, v)
	}
	return &p, nil
}

// parseMessage decodes p.Message as a TPMS_ATTEST of type quote.
func (p *Parsed) parseMessage() (err error) {
	defer recoverDecode("TPM quote message", &err)
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](p.Message)
	if err != nil {
		return fmt.Errorf("parse TPM quote message: %w", err)
	}
	if att.Magic != tpm2.TPMGeneratedValue {
		return fmt.Errorf("parse TPM quote message: magic %#x is not TPM_GENERATED_VALUE", uint32(att.Magic))
	}
	info, err := att.Attested.Quote()
	if err != nil {
		return fmt.Errorf("parse TPM quote message: not a quote: %w", err)
	}
	p.Nonce = att.ExtraData.Buffer
	p.PCRDigest = info.PCRDigest.Buffer
	for _, s := range info.PCRSelect.PCRSelections {
		sel := PCRSelection{Hash: uint16(s.Hash)}
		for i, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					sel.PCRs = append(sel.PCRs, i*8+bit)
				}
			}
		}
		p.Selection = append(p.Selection, sel)
	}
	return nil
}

// parseSignature decodes b as a TPMT_SIGNATURE.
func (p *Parsed) parseSignature(b []byte) (err error) {
	defer recoverDecode("TPM quote signature", &err)
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](b)
	if err != nil {
		return fmt.Errorf("parse TPM quote signature: %w", err)
	}
	p.SigAlg = uint16(sig.SigAlg)
	// trustee's verifier takes RSASSA signatures only.
	if sig.SigAlg != tpm2.TPMAlgRSASSA {
		return fmt.Errorf("parse TPM quote signature: scheme %#04x is not RSASSA", p.SigAlg)
	}
	rs, err := sig.Signature.RSASSA()
	if err != nil {
		return fmt.Errorf("parse TPM quote signature: %w", err)
	}
	p.SigHash, p.Sig = uint16(rs.Hash), rs.Sig.Buffer
	return nil
}

// recoverDecode turns a panic in go-tpm's reflection-based decoder into an
// error, so that no evidence bytes can crash the caller.
func recoverDecode(what string, err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("parse %s: malformed input (%v)", what, r)
	}
}
