package snp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/client"

	"github.com/guestd/guestd/attester"
)

// ReportDataSize is the size of the report's REPORT_DATA field.
const ReportDataSize = 64

// Evidence is SNP evidence as trustee's SNP verifier deserializes it.
type Evidence struct {
	AttestationReport Report `json:"attestation_report"`
	// CertChain is the host's certificate table, or nil (JSON null) when
	// it carries no VCEK or VLEK: a verifier then fetches the VCEK from
	// AMD's KDS.
	CertChain []CertEntry `json:"cert_chain"`
}

// Attester gets SEV-SNP evidence from a go-sev-guest QuoteProvider.
type Attester struct {
	qp client.QuoteProvider
}

// New returns an attester that gets reports from qp. qp's GetRawQuote must
// return an ATTESTATION_REPORT optionally followed by a certificate table,
// as go-sev-guest's providers do.
func New(qp client.QuoteProvider) *Attester {
	return &Attester{qp: qp}
}

// Default returns an attester on this machine's SEV-SNP guest interface:
// configfs-tsm (report plus the auxblob certificate table) when the kernel
// has it, else the /dev/sev-guest extended report ioctl (report plus the
// host's certificate table, or the bare report when the host has none).
func Default() (*Attester, error) {
	qp, err := client.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("open SEV-SNP guest interface: %w", err)
	}
	return New(qp), nil
}

// Tee returns "snp".
func (*Attester) Tee() string { return "snp" }

// Evidence returns the JSON evidence for reportData, which is zero-padded
// to 64 bytes; longer report data is an error.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("snp evidence: %w", err)
	}
	rd, err := attester.Regularize(reportData, ReportDataSize, false)
	if err != nil {
		return nil, fmt.Errorf("snp evidence: %w", err)
	}
	raw, err := a.qp.GetRawQuote([ReportDataSize]byte(rd))
	if err != nil {
		return nil, fmt.Errorf("snp evidence: get extended report: %w", err)
	}
	ev, err := EvidenceFromQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("snp evidence: %w", err)
	}
	if !bytes.Equal(ev.AttestationReport.ReportData[:], rd) {
		return nil, errors.New("snp evidence: the quote provider returned a report for other report data")
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("snp evidence: encode: %w", err)
	}
	return out, nil
}

// EvidenceFromQuote builds evidence from raw, an ATTESTATION_REPORT
// optionally followed by a certificate table (what go-sev-guest's
// GetRawQuote returns). It fails if the report has bytes its JSON form
// cannot carry, since such evidence would not verify.
func EvidenceFromQuote(raw []byte) (*Evidence, error) {
	rep, err := decodeLossless(raw)
	if err != nil {
		return nil, err
	}
	entries, err := ParseCertTable(raw[ReportSize:])
	if err != nil {
		return nil, err
	}
	var chain []CertEntry
	hasEK := false
	for _, e := range entries {
		switch e.GUID.String() {
		case guidExtraPlatformInfo:
			continue
		case GUIDVCEK, GUIDVLEK:
			hasEK = true
		}
		chain = append(chain, e)
	}
	if !hasEK {
		chain = nil
	}
	return &Evidence{AttestationReport: *rep, CertChain: chain}, nil
}

// ParseEvidence decodes SNP evidence JSON. It returns the report in its
// ABI form (ReportSize bytes, the signed byte string) and the certificate
// table entries (nil when cert_chain is null or absent).
func ParseEvidence(data []byte) (report []byte, certs []CertEntry, err error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, nil, fmt.Errorf("parse snp evidence: %w", err)
	}
	if fields == nil {
		return nil, nil, errors.New("parse snp evidence: not a JSON object")
	}
	if _, ok := fields["attestation_report"]; !ok {
		return nil, nil, errors.New("parse snp evidence: missing attestation_report")
	}
	var ev Evidence
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, nil, fmt.Errorf("parse snp evidence: %w", err)
	}
	report, err = ev.AttestationReport.ABI()
	if err != nil {
		return nil, nil, fmt.Errorf("parse snp evidence: %w", err)
	}
	return report, ev.CertChain, nil
}
