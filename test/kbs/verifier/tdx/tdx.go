package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/guestd/guestd/attester"
	tdxev "github.com/guestd/guestd/attester/tdx"
)

// Errors Verify wraps, so callers can tell causes apart with errors.Is.
var (
	// ErrMalformed: the evidence or its quote does not parse.
	ErrMalformed = errors.New("malformed TDX evidence")
	// ErrCertificate: the quote's PCK chain or QE report does not lead to
	// the trusted root ("certificate signed by unknown authority", expired).
	ErrCertificate = errors.New("TDX quote certification not trusted")
	// ErrSignature: the quote's signature does not verify under its
	// attestation key.
	ErrSignature = errors.New("TDX quote signature invalid")
	// ErrReportData: the quote binds other report data.
	ErrReportData = errors.New("TDX report data mismatch")
)

// Options configures a Verifier.
type Options struct {
	// RootPEM holds the trusted root certificate(s) as PEM: Intel's SGX
	// Root CA in production, a fake's root in tests.
	RootPEM []byte
	// Now returns the time to check certificate validity at; nil means
	// time.Now.
	Now func() time.Time
}

// Verifier verifies TDX evidence. It is safe for concurrent use.
type Verifier struct {
	roots *x509.CertPool
	now   func() time.Time
}

// New returns a verifier trusting the roots in opts.RootPEM.
func New(opts Options) (*Verifier, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := opts.RootPEM; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			if len(bytes.TrimSpace(rest)) != 0 {
				return nil, errors.New("tdx verifier: root: trailing data that is not PEM")
			}
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("tdx verifier: root: unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("tdx verifier: root: %w", err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("tdx verifier: root: no certificate")
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	return &Verifier{roots: pool, now: now}, nil
}

// Verify checks evidence (trustee's TDX evidence JSON) and that its quote
// binds reportData zero-padded to 64 bytes, and returns trustee's TDX
// claims: {"quote": {"header": {...}, "body": {...}}, "td_attributes":
// {...}, "report_data", "init_data"} with byte fields as hex strings. The
// event log is carried but not parsed.
func (v *Verifier) Verify(ctx context.Context, evidence json.RawMessage, reportData []byte) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tdx verify: %w", err)
	}
	want, err := attester.Regularize(reportData, tdxev.ReportDataSize, false)
	if err != nil {
		return nil, fmt.Errorf("tdx verify: expected %w", err)
	}
	raw, _, err := tdxev.ParseEvidence(evidence)
	if err != nil {
		return nil, fmt.Errorf("tdx verify: %w: %w", ErrMalformed, err)
	}
	quote, err := parseQuote(raw)
	if err != nil {
		return nil, fmt.Errorf("tdx verify: %w: %w", ErrMalformed, err)
	}
	now := v.now()
	opts := &verify.Options{
		TrustedRoots: v.roots,
		Now:          &verify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
	}
	if err := verify.TdxQuoteContext(ctx, quote, opts); err != nil {
		if sigErr := checkQuoteSignature(quote); sigErr != nil {
			return nil, fmt.Errorf("tdx verify: %w: %w", ErrSignature, sigErr)
		}
		return nil, fmt.Errorf("tdx verify: %w: %w", ErrCertificate, err)
	}
	body := quote.GetTdQuoteBody()
	if !bytes.Equal(body.GetReportData(), want) {
		return nil, fmt.Errorf("tdx verify: %w: quote has %s, expected %s", ErrReportData,
			hex.EncodeToString(body.GetReportData()), hex.EncodeToString(want))
	}
	return claims(quote), nil
}

// parseQuote checks the length fields of a v4 quote before handing it to
// go-tdx-guest's parser, which indexes by them without bounds checks.
func parseQuote(q []byte) (*pb.QuoteV4, error) {
	le := binary.LittleEndian
	if len(q) < 2 {
		return nil, fmt.Errorf("quote is %d bytes", len(q))
	}
	if v := le.Uint16(q); v != 4 {
		return nil, fmt.Errorf("quote version %d unsupported (this verifier takes v4)", v)
	}
	if len(q) < abi.QuoteMinSize {
		return nil, fmt.Errorf("quote is %d bytes, at least %d needed", len(q), abi.QuoteMinSize)
	}
	const signedStart = 0x27C
	sdSize := uint64(le.Uint32(q[0x278:]))
	if sdSize > uint64(len(q)-signedStart) {
		return nil, fmt.Errorf("quote signed data size %d exceeds the %d bytes present", sdSize, len(q)-signedStart)
	}
	sd := q[signedStart : signedStart+int(sdSize)]
	// signature (0x40), attestation key (0x40), certification data type
	// (2) and size (4)
	if len(sd) < 0x86 {
		return nil, fmt.Errorf("quote signed data is %d bytes", len(sd))
	}
	cd := sd[0x86:]
	if cdSize := uint64(le.Uint32(sd[0x82:])); cdSize != uint64(len(cd)) {
		return nil, fmt.Errorf("quote certification data size %d, %d bytes present", cdSize, len(cd))
	}
	// QE report (0x180), its signature (0x40), auth data size (2)
	if len(cd) < 0x1C2 {
		return nil, fmt.Errorf("quote QE certification data is %d bytes", len(cd))
	}
	authEnd := 0x1C2 + int(le.Uint16(cd[0x1C0:]))
	// then PCK chain data type (2) and size (4)
	if authEnd+6 > len(cd) {
		return nil, errors.New("quote QE auth data overruns the certification data")
	}
	parsed, err := abi.QuoteToProto(q)
	if err != nil {
		return nil, err
	}
	quote, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("quote parses as %T", parsed)
	}
	return quote, nil
}

// checkQuoteSignature checks the quote's signature over header and body
// under its attestation key alone, to tell a tampered quote from an
// untrusted chain.
func checkQuoteSignature(q *pb.QuoteV4) error {
	ak := q.GetSignedData().GetEcdsaAttestationKey()
	sig := q.GetSignedData().GetSignature()
	if len(ak) != 64 || len(sig) != 64 {
		return errors.New("attestation key or signature has the wrong size")
	}
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return err
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return err
	}
	pub := &ecdsa.PublicKey{Curve: elliptic.P256(), X: new(big.Int).SetBytes(ak[:32]), Y: new(big.Int).SetBytes(ak[32:])}
	digest := sha256.Sum256(append(header, body...))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return errors.New("quote signature does not verify under its attestation key")
	}
	return nil
}

// claims returns trustee's TDX claims for q.
func claims(q *pb.QuoteV4) map[string]any {
	h, b := q.GetHeader(), q.GetTdQuoteBody()
	x := hex.EncodeToString
	u16 := func(v uint32) string { return x(binary.LittleEndian.AppendUint16(nil, uint16(v))) }
	u32 := func(v uint32) string { return x(binary.LittleEndian.AppendUint32(nil, v)) }
	rtmr := func(i int) string {
		if i < len(b.GetRtmrs()) {
			return x(b.GetRtmrs()[i])
		}
		return ""
	}
	attrs := b.GetTdAttributes()
	var a uint64
	if len(attrs) == 8 {
		a = binary.LittleEndian.Uint64(attrs)
	}
	return map[string]any{
		"quote": map[string]any{
			"header": map[string]any{
				"version":      u16(h.GetVersion()),
				"att_key_type": u16(h.GetAttestationKeyType()),
				"tee_type":     u32(h.GetTeeType()),
				"reserved":     x(append(append([]byte(nil), h.GetPceSvn()...), h.GetQeSvn()...)),
				"vendor_id":    x(h.GetQeVendorId()),
				"user_data":    x(h.GetUserData()),
			},
			"body": map[string]any{
				"tcb_svn":         x(b.GetTeeTcbSvn()),
				"mr_seam":         x(b.GetMrSeam()),
				"mrsigner_seam":   x(b.GetMrSignerSeam()),
				"seam_attributes": x(b.GetSeamAttributes()),
				"td_attributes":   x(attrs),
				"xfam":            x(b.GetXfam()),
				"mr_td":           x(b.GetMrTd()),
				"mr_config_id":    x(b.GetMrConfigId()),
				"mr_owner":        x(b.GetMrOwner()),
				"mr_owner_config": x(b.GetMrOwnerConfig()),
				"rtmr_0":          rtmr(0),
				"rtmr_1":          rtmr(1),
				"rtmr_2":          rtmr(2),
				"rtmr_3":          rtmr(3),
				"report_data":     x(b.GetReportData()),
			},
		},
		"td_attributes": map[string]any{
			"debug":           a&(1<<0) != 0,
			"septve_disable":  a&(1<<28) != 0,
			"protection_keys": a&(1<<30) != 0,
			"key_locker":      a&(1<<31) != 0,
			"perfmon":         a&(1<<63) != 0,
		},
		"report_data": x(b.GetReportData()),
		"init_data":   x(b.GetMrConfigId()),
	}
}
