package snpfake

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	sgtest "github.com/google/go-sev-guest/testing"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Options configures a fake. The zero value is a Milan machine with a
// version 3 report.
type Options struct {
	// ProductLine is "Milan" (default), "Genoa" or "Turin".
	ProductLine string
	// Now is when the test certificate chain starts to be valid; the VCEK
	// stays valid for 7 years. Zero means an hour before New.
	Now time.Time
	// ReportVersion is 3 (default), 4 or 5.
	ReportVersion uint32
	// Measurement (at most 48 bytes) and HostData (at most 32 bytes) are
	// zero-padded into every report.
	Measurement []byte
	HostData    []byte
	// Policy is the guest policy in every report; zero means SMT allowed,
	// debug off (0x30000), as a typical CoCo guest.
	Policy uint64
}

// Provider implements go-sev-guest's client.QuoteProvider (and
// LeveledQuoteProvider at VMPL 0). It is safe for concurrent use once
// built; New itself must not run concurrently with another New in the same
// process, because go-sev-guest's test chain builder shares a random
// source.
type Provider struct {
	vcek     *ecdsa.PrivateKey
	template [abi.ReportSize]byte
	table    []byte
	product  *spb.SevProduct
	line     string
	rootsPEM []byte
	now      time.Time
}

// stepping is the machine stepping the fake reports for a product line.
func stepping(line string) uint32 {
	if line == "Turin" {
		return 0
	}
	return 1
}

// New builds a fake with a fresh test certificate chain.
func New(opts Options) (*Provider, error) {
	line := opts.ProductLine
	if line == "" {
		line = "Milan"
	}
	product, err := kds.ParseProductLine(line)
	if err != nil {
		return nil, fmt.Errorf("snpfake: %w", err)
	}
	product.MachineStepping = wrapperspb.UInt32(stepping(line))
	version := opts.ReportVersion
	if version == 0 {
		version = 3
	}
	if version < 3 || version > 5 {
		return nil, fmt.Errorf("snpfake: report version %d unsupported (3 to 5)", version)
	}
	if len(opts.Measurement) > 48 || len(opts.HostData) > 32 {
		return nil, errors.New("snpfake: measurement is at most 48 bytes, host data at most 32")
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now().Add(-time.Hour)
	}
	signer, err := sgtest.DefaultTestOnlyCertChain(kds.ProductName(product), now)
	if err != nil {
		return nil, fmt.Errorf("snpfake: build test certificate chain: %w", err)
	}
	p := &Provider{
		vcek:    signer.Keys.Vcek,
		product: product,
		line:    line,
		now:     now,
		table: abi.CertsFromProto(&spb.CertificateChain{
			ArkCert:  signer.Ark.Raw,
			AskCert:  signer.Ask.Raw,
			VcekCert: signer.Vcek.Raw,
		}).Marshal(),
	}
	for _, c := range [][]byte{signer.Ark.Raw, signer.Ask.Raw, signer.Asvk.Raw} {
		p.rootsPEM = append(p.rootsPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
	}
	resp := sgtest.CreateRawReport(&sgtest.TestReportOptions{
		FMS:     abi.MaskedCpuid1EaxFromSevProduct(product),
		Version: version,
	})
	copy(p.template[:], resp[:abi.ReportSize])
	policy := opts.Policy
	if policy == 0 {
		policy = abi.SnpPolicyToBytes(abi.SnpPolicy{SMT: true})
	}
	if _, err := abi.ParseSnpPolicy(policy); err != nil {
		return nil, fmt.Errorf("snpfake: policy: %w", err)
	}
	binary.LittleEndian.PutUint64(p.template[0x08:], policy)
	copy(p.template[0x90:0xC0], opts.Measurement)
	copy(p.template[0xC0:0xE0], opts.HostData)
	return p, nil
}

// IsSupported returns true.
func (*Provider) IsSupported() bool { return true }

// GetRawQuote returns a signed version-3+ report binding reportData,
// followed by a certificate table with the ARK, ASK and VCEK.
func (p *Provider) GetRawQuote(reportData [64]byte) ([]byte, error) {
	report := p.template
	copy(report[0x50:0x90], reportData[:])
	digest := sha512.Sum384(report[:0x2A0])
	r, s, err := ecdsa.Sign(rand.Reader, p.vcek, digest[:])
	if err != nil {
		return nil, fmt.Errorf("snpfake: sign report: %w", err)
	}
	if err := abi.SetSignature(r, s, report[:]); err != nil {
		return nil, fmt.Errorf("snpfake: set signature: %w", err)
	}
	return append(report[:], p.table...), nil
}

// GetRawQuoteAtLevel is GetRawQuote for VMPL 0 only.
func (p *Provider) GetRawQuoteAtLevel(reportData [64]byte, vmpl uint) ([]byte, error) {
	if vmpl != 0 {
		return nil, fmt.Errorf("snpfake: VMPL %d unsupported", vmpl)
	}
	return p.GetRawQuote(reportData)
}

// Product returns the fake machine's product (line and stepping).
func (p *Provider) Product() *spb.SevProduct {
	return &spb.SevProduct{Name: p.product.Name, MachineStepping: wrapperspb.UInt32(p.product.GetMachineStepping().GetValue())}
}

// ProductLine returns "Milan", "Genoa" or "Turin", the product line whose
// roots RootsPEM are.
func (p *Provider) ProductLine() string { return p.line }

// RootsPEM returns the test ARK, ASK and ASVK certificates as PEM, the
// trust roots a verifier needs for this fake's reports.
func (p *Provider) RootsPEM() []byte { return append([]byte(nil), p.rootsPEM...) }

// NotBefore is when the test chain starts to be valid; verifiers must
// check at or after it.
func (p *Provider) NotBefore() time.Time { return p.now }
