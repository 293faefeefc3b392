package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/validate"
	"github.com/google/go-sev-guest/verify"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/guestd/guestd/attester"
	snpev "github.com/guestd/guestd/attester/snp"
)

// Errors Verify wraps, so callers can tell causes apart with errors.Is.
var (
	// ErrMalformed: the evidence does not parse as SNP evidence.
	ErrMalformed = errors.New("malformed SNP evidence")
	// ErrCertificate: the VCEK/VLEK chain does not lead to the trust roots
	// ("certificate signed by unknown authority", expired, wrong product).
	ErrCertificate = errors.New("SNP certificate chain not trusted")
	// ErrSignature: the report's signature does not verify under its VCEK/VLEK.
	ErrSignature = errors.New("SNP report signature invalid")
	// ErrReportData: the report binds other report data.
	ErrReportData = errors.New("SNP report data mismatch")
	// ErrPolicy: a report field fails trustee's checks (VMPL, TCB, CHIP_ID).
	ErrPolicy = errors.New("SNP report rejected")
)

// Options configures a Verifier.
type Options struct {
	// RootsPEM holds the ARK and ASK, and optionally the ASVK, of one
	// product line as PEM certificates, in any order (AMD KDS's
	// cert_chain file and trustee's *_ask_ark_asvk.pem both work).
	RootsPEM []byte
	// Product is the product line of the roots: "Milan", "Genoa" or "Turin".
	Product string
	// Now returns the time to check certificate validity at; nil means
	// time.Now.
	Now func() time.Time
}

// Verifier verifies SNP evidence. It is safe for concurrent use.
type Verifier struct {
	product string
	roots   *trust.ProductCerts
	now     func() time.Time
}

// New returns a verifier trusting opts.RootsPEM for opts.Product.
func New(opts Options) (*Verifier, error) {
	if _, err := kds.ParseProductLine(opts.Product); err != nil {
		return nil, fmt.Errorf("snp verifier: product: %w", err)
	}
	roots, err := parseRoots(opts.RootsPEM)
	if err != nil {
		return nil, fmt.Errorf("snp verifier: roots: %w", err)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{product: opts.Product, roots: roots, now: now}, nil
}

// parseRoots sorts PEM certificates into ARK (self-signed), ASVK (common
// name SEV-VLEK-*) and ASK, and checks the ARK signed the others.
func parseRoots(data []byte) (*trust.ProductCerts, error) {
	pc := &trust.ProductCerts{}
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, errors.New("trailing data that is not PEM")
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		var slot **x509.Certificate
		switch {
		case bytes.Equal(cert.RawSubject, cert.RawIssuer) && cert.CheckSignatureFrom(cert) == nil:
			slot = &pc.Ark
		case strings.HasPrefix(cert.Subject.CommonName, "SEV-VLEK-"):
			slot = &pc.Asvk
		default:
			slot = &pc.Ask
		}
		if *slot != nil {
			return nil, fmt.Errorf("two certificates for the role of %q", cert.Subject.CommonName)
		}
		*slot = cert
	}
	if pc.Ark == nil || pc.Ask == nil {
		return nil, errors.New("need an ARK (self-signed) and an ASK certificate")
	}
	for _, c := range []*x509.Certificate{pc.Ask, pc.Asvk} {
		if c == nil {
			continue
		}
		if err := c.CheckSignatureFrom(pc.Ark); err != nil {
			return nil, fmt.Errorf("%q is not signed by the ARK %q: %w", c.Subject.CommonName, pc.Ark.Subject.CommonName, err)
		}
	}
	return pc, nil
}

// Verify checks evidence (trustee's SNP evidence JSON) and that its report
// binds reportData zero-padded to 64 bytes, and returns trustee's SNP
// claims: hex strings for byte fields, numbers for TCB parts, booleans for
// policy and platform bits.
func (v *Verifier) Verify(ctx context.Context, evidence json.RawMessage, reportData []byte) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snp verify: %w", err)
	}
	want, err := attester.Regularize(reportData, snpev.ReportDataSize, false)
	if err != nil {
		return nil, fmt.Errorf("snp verify: expected %w", err)
	}
	raw, certs, err := snpev.ParseEvidence(evidence)
	if err != nil {
		return nil, fmt.Errorf("snp verify: %w: %w", ErrMalformed, err)
	}
	rep, err := snpev.ReportFromABI(raw)
	if err != nil {
		return nil, fmt.Errorf("snp verify: %w: %w", ErrMalformed, err)
	}
	// trustee takes versions 3 to 5; version 3 is the first to name the
	// processor in the report.
	if rep.Version < 3 || rep.Version > 5 {
		return nil, fmt.Errorf("snp verify: %w: report version %d, want 3 to 5", ErrMalformed, rep.Version)
	}
	report, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("snp verify: %w: %w", ErrMalformed, err)
	}
	info, err := abi.ParseSignerInfo(report.GetSignerInfo())
	if err != nil {
		return nil, fmt.Errorf("snp verify: %w: key_info: %w", ErrMalformed, err)
	}
	var ekGUID string
	switch info.SigningKey {
	case abi.VcekReportSigner:
		ekGUID = snpev.GUIDVCEK
	case abi.VlekReportSigner:
		ekGUID = snpev.GUIDVLEK
	default:
		return nil, fmt.Errorf("snp verify: %w: report signed by %v", ErrSignature, info.SigningKey)
	}
	table := &abi.CertTable{}
	var ekDER []byte
	for _, c := range certs {
		table.Entries = append(table.Entries, abi.CertTableEntry{GUID: c.GUID, RawCert: c.Data})
		if c.GUID.String() == ekGUID && ekDER == nil {
			ekDER = c.Data
		}
	}
	if len(ekDER) == 0 {
		return nil, fmt.Errorf("snp verify: %w: cert_chain has no %v certificate (this verifier does not fetch from AMD KDS)", ErrCertificate, info.SigningKey)
	}
	att := &spb.Attestation{Report: report, CertificateChain: table.Proto()}
	line, err := rep.ProductLine()
	if err != nil {
		return nil, fmt.Errorf("snp verify: %w: %w", ErrMalformed, err)
	}
	if line != v.product {
		return nil, fmt.Errorf("snp verify: %w: report is from a %s processor, the verifier trusts %s roots", ErrCertificate, line, v.product)
	}
	opts := &verify.Options{
		DisableCertFetching: true,
		Now:                 v.now(),
		// go-sev-guest looks roots up by the product line it derives from
		// CPUID, which is "Unknown" for some models trustee (and the check
		// above) count as Genoa, such as family 19h model A0h.
		TrustedRoots: map[string][]*trust.AMDRootCerts{
			kds.ProductLineFromFms(report.GetCpuid1EaxFms()): {{ProductLine: v.product, ProductCerts: v.roots}},
		},
	}
	if err := verify.SnpAttestationContext(ctx, att, opts); err != nil {
		// Tell a bad signature from an untrusted chain by checking the
		// signature on its own against the evidence's own key.
		if ek, perr := x509.ParseCertificate(ekDER); perr == nil {
			if _, ok := ek.PublicKey.(*ecdsa.PublicKey); ok && verify.SnpReportSignature(raw, ek) != nil {
				return nil, fmt.Errorf("snp verify: %w: %w", ErrSignature, err)
			}
		}
		return nil, fmt.Errorf("snp verify: %w: %w", ErrCertificate, err)
	}
	if !bytes.Equal(report.GetReportData(), want) {
		return nil, fmt.Errorf("snp verify: %w: report has %s, expected %s", ErrReportData,
			hex.EncodeToString(report.GetReportData()), hex.EncodeToString(want))
	}
	vmpl := 0
	vopts := &validate.Options{
		ReportData: want,
		// trustee leaves the guest policy to the attestation policy; allow
		// every policy here and report it in the claims.
		GuestPolicy: abi.SnpPolicy{
			SMT: true, MigrateMA: true, Debug: true, CXLAllowed: true,
		},
		VMPL:                      &vmpl,
		PermitProvisionalFirmware: true,
	}
	if err := validate.SnpAttestation(att, vopts); err != nil {
		return nil, fmt.Errorf("snp verify: %w: %w", ErrPolicy, err)
	}
	return claims(rep), nil
}

// claims returns trustee's SNP claims for r.
func claims(r *snpev.Report) map[string]any {
	p := r.Policy
	bit := func(v uint64, n uint) bool { return v&(1<<n) != 0 }
	return map[string]any{
		"policy_abi_major":        int(p >> 8 & 0xff),
		"policy_abi_minor":        int(p & 0xff),
		"policy_smt_allowed":      bit(p, 16),
		"policy_migrate_ma":       bit(p, 18),
		"policy_debug_allowed":    bit(p, 19),
		"policy_single_socket":    bit(p, 20),
		"reported_tcb_bootloader": int(r.ReportedTCB.Bootloader),
		"reported_tcb_tee":        int(r.ReportedTCB.TEE),
		"reported_tcb_snp":        int(r.ReportedTCB.SNP),
		"reported_tcb_microcode":  int(r.ReportedTCB.Microcode),
		"platform_tsme_enabled":   bit(r.PlatInfo, 1),
		"platform_smt_enabled":    bit(r.PlatInfo, 0),
		"measurement":             hex.EncodeToString(r.Measurement[:]),
		"report_data":             hex.EncodeToString(r.ReportData[:]),
		"init_data":               hex.EncodeToString(r.HostData[:]),
		"chip_id":                 hex.EncodeToString(r.ChipID[:]),
	}
}
