package tdxfake

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"google.golang.org/protobuf/proto"
)

// Options configures a fake. The zero value re-signs the canned quote
// with its own measurements.
type Options struct {
	// Now is when the test certificates start to be valid (they stay valid
	// 10 years). Zero means an hour before New.
	Now time.Time
	// MrTd and MrConfigID (at most 48 bytes each) replace MR_TD and
	// MR_CONFIG_ID, zero-padded, when non-nil. Rtmrs[i] likewise replaces
	// RTMR i.
	MrTd       []byte
	MrConfigID []byte
	Rtmrs      [4][]byte
}

// Provider implements go-tdx-guest's client.QuoteProvider. It is safe for
// concurrent use.
type Provider struct {
	quote     *pb.QuoteV4 // template: chain and QE report in place, body unsigned
	attestKey *ecdsa.PrivateKey
	root      *x509.Certificate
	now       time.Time
}

// New generates a test root, intermediate and PCK certificate and a QE
// attestation key, and prepares the canned quote for re-signing.
func New(opts Options) (*Provider, error) {
	q, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		return nil, fmt.Errorf("tdxfake: parse canned quote: %w", err)
	}
	quote, ok := q.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("tdxfake: canned quote is %T, want a v4 quote", q)
	}
	body := quote.GetTdQuoteBody()
	for _, f := range []struct {
		dst  []byte
		src  []byte
		name string
	}{
		{body.GetMrTd(), opts.MrTd, "MrTd"},
		{body.GetMrConfigId(), opts.MrConfigID, "MrConfigID"},
		{body.GetRtmrs()[0], opts.Rtmrs[0], "Rtmrs[0]"},
		{body.GetRtmrs()[1], opts.Rtmrs[1], "Rtmrs[1]"},
		{body.GetRtmrs()[2], opts.Rtmrs[2], "Rtmrs[2]"},
		{body.GetRtmrs()[3], opts.Rtmrs[3], "Rtmrs[3]"},
	} {
		if f.src == nil {
			continue
		}
		if len(f.src) > len(f.dst) {
			return nil, fmt.Errorf("tdxfake: %s is %d bytes, at most %d", f.name, len(f.src), len(f.dst))
		}
		clear(f.dst)
		copy(f.dst, f.src)
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now().Add(-time.Hour)
	}
	realChain, err := parseChain(quote)
	if err != nil {
		return nil, err
	}
	root, inter, pck, pckKey, err := newChain(realChain, now)
	if err != nil {
		return nil, fmt.Errorf("tdxfake: create test PCK chain: %w", err)
	}
	attestKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("tdxfake: generate attestation key: %w", err)
	}

	sd := quote.GetSignedData()
	ak := make([]byte, 64)
	attestKey.PublicKey.X.FillBytes(ak[:32])
	attestKey.PublicKey.Y.FillBytes(ak[32:])
	sd.EcdsaAttestationKey = ak

	cd := sd.GetCertificationData()
	qe := cd.GetQeReportCertificationData()
	// The QE binds the attestation key: its report data is
	// sha256(attestation key || QE auth data) padded with zeros.
	h := sha256.Sum256(append(append([]byte(nil), ak...), qe.GetQeAuthData().GetData()...))
	qeRD := make([]byte, 64)
	copy(qeRD, h[:])
	qe.GetQeReport().ReportData = qeRD
	qeReport, err := abi.EnclaveReportToAbiBytes(qe.GetQeReport())
	if err != nil {
		return nil, fmt.Errorf("tdxfake: encode QE report: %w", err)
	}
	if qe.QeReportSignature, err = sign(pckKey, qeReport); err != nil {
		return nil, fmt.Errorf("tdxfake: sign QE report: %w", err)
	}

	var chain []byte
	for _, c := range []*x509.Certificate{pck, inter, root} {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	pcd := qe.GetPckCertificateChainData()
	pcd.PckCertChain = chain
	pcd.Size = uint32(len(chain))
	// Sizes of the enclosing structures: QE report, its signature, the
	// auth data (2-byte size + data), the chain (2-byte type, 4-byte size,
	// data); then the signature, attestation key and certification data
	// header (2-byte type, 4-byte size).
	cd.Size = uint32(0x180 + 0x40 + 2 + len(qe.GetQeAuthData().GetData()) + 6 + len(chain))
	quote.SignedDataSize = 0x40 + 0x40 + 6 + cd.Size
	quote.ExtraBytes = nil
	return &Provider{quote: quote, attestKey: attestKey, root: root, now: now}, nil
}

// parseChain returns the canned quote's real PCK certificate chain
// (PCK, intermediate, root).
func parseChain(quote *pb.QuoteV4) ([]*x509.Certificate, error) {
	rest := quote.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var certs []*x509.Certificate
	for len(certs) < 3 {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return nil, errors.New("tdxfake: canned quote's PCK chain has fewer than 3 certificates")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tdxfake: canned quote's PCK chain: %w", err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// newChain creates a root, an intermediate and a PCK certificate with the
// subjects of the real ones; the PCK gets exactly the real PCK's
// extensions (the SGX extension with FMSPC, TCB and PCE ID among them)
// except the authority key ID, which x509 derives from the new issuer.
func newChain(real []*x509.Certificate, now time.Time) (root, inter, pck *x509.Certificate, pckKey *ecdsa.PrivateKey, err error) {
	realPCK, realInter, realRoot := real[0], real[1], real[2]
	notAfter := now.Add(10 * 365 * 24 * time.Hour)
	serial := func() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) }
	create := func(tmpl, parent *x509.Certificate, pub any, signer *ecdsa.PrivateKey) (*x509.Certificate, error) {
		sn, err := serial()
		if err != nil {
			return nil, err
		}
		tmpl.SerialNumber = sn
		tmpl.NotBefore, tmpl.NotAfter = now, notAfter
		tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
		if parent == nil {
			parent = tmpl
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
		if err != nil {
			return nil, err
		}
		return x509.ParseCertificate(der)
	}
	keys := make([]*ecdsa.PrivateKey, 3)
	for i := range keys {
		if keys[i], err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	root, err = create(&x509.Certificate{
		Subject:               realRoot.Subject,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil, &keys[0].PublicKey, keys[0])
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("root: %w", err)
	}
	inter, err = create(&x509.Certificate{
		Subject:               realInter.Subject,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, root, &keys[1].PublicKey, keys[0])
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("intermediate: %w", err)
	}
	tmpl := &x509.Certificate{Subject: realPCK.Subject}
	authorityKeyID := asn1.ObjectIdentifier{2, 5, 29, 35}
	for _, ext := range realPCK.Extensions {
		if !ext.Id.Equal(authorityKeyID) {
			tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, ext)
		}
	}
	pck, err = create(tmpl, inter, &keys[2].PublicKey, keys[1])
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("PCK: %w", err)
	}
	if len(pck.Extensions) != len(realPCK.Extensions) {
		return nil, nil, nil, nil, fmt.Errorf("PCK has %d extensions, the real one %d", len(pck.Extensions), len(realPCK.Extensions))
	}
	return root, inter, pck, keys[2], nil
}

// sign returns the raw r||s (32 bytes each) ECDSA signature over
// sha256(msg), the form TDX quotes carry.
func sign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig, nil
}

// IsSupported returns nil: the fake is always available.
func (*Provider) IsSupported() error { return nil }

// GetRawQuote returns a v4 quote with REPORT_DATA = reportData, signed by
// the fake quoting enclave's attestation key, itself certified by the
// test PCK chain.
func (p *Provider) GetRawQuote(reportData [64]byte) ([]byte, error) {
	q := proto.Clone(p.quote).(*pb.QuoteV4)
	q.GetTdQuoteBody().ReportData = reportData[:]
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return nil, fmt.Errorf("tdxfake: encode header: %w", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return nil, fmt.Errorf("tdxfake: encode TD quote body: %w", err)
	}
	if q.GetSignedData().Signature, err = sign(p.attestKey, append(header, body...)); err != nil {
		return nil, fmt.Errorf("tdxfake: sign quote: %w", err)
	}
	raw, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		return nil, fmt.Errorf("tdxfake: encode quote: %w", err)
	}
	return raw, nil
}

// RootPEM returns the fake's root certificate as PEM, the trusted root a
// verifier needs for this fake's quotes.
func (p *Provider) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.root.Raw})
}

// NotBefore is when the test certificates start to be valid; verifiers
// must check at or after it.
func (p *Provider) NotBefore() time.Time { return p.now }
