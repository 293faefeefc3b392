package tdx_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/guestd/guestd/test/kbs/verifier/tdx"
	"github.com/guestd/guestd/test/tee/tdxfake"
)

func intelRoot(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/intel_sgx_root_ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func evidence(quote []byte) json.RawMessage {
	out, _ := json.Marshal(map[string]any{"cc_eventlog": nil, "quote": base64.StdEncoding.EncodeToString(quote)})
	return out
}

// pckValidity returns a time inside the validity of every certificate in
// quote's PCK chain.
func pckValidity(t *testing.T, quote []byte) time.Time {
	t.Helper()
	i := bytes.Index(quote, []byte("-----BEGIN CERTIFICATE-----"))
	if i < 0 {
		t.Fatal("no PEM in quote")
	}
	var from, to time.Time
	for rest := quote[i:]; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if c.NotBefore.After(from) {
			from = c.NotBefore
		}
		if to.IsZero() || c.NotAfter.Before(to) {
			to = c.NotAfter
		}
	}
	if !from.Before(to) {
		t.Fatalf("chain has no common validity")
	}
	return from.Add(to.Sub(from) / 2)
}

// TestRealQuote verifies go-tdx-guest's canned Intel-signed quote under
// Intel's root.
func TestRealQuote(t *testing.T) {
	now := pckValidity(t, testdata.RawQuote)
	v, err := tdx.New(tdx.Options{RootPEM: intelRoot(t), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rd := testdata.RawQuote[0x238:0x278]
	claims, err := v.Verify(context.Background(), evidence(testdata.RawQuote), rd)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	header := claims["quote"].(map[string]any)["header"].(map[string]any)
	if header["version"] != "0400" || header["tee_type"] != "81000000" || header["att_key_type"] != "0200" {
		t.Errorf("header claims = %v", header)
	}
	if claims["report_data"] != hex.EncodeToString(rd) {
		t.Errorf("report_data = %v", claims["report_data"])
	}
	if _, err := v.Verify(context.Background(), evidence(testdata.RawQuote), []byte("other")); !errors.Is(err, tdx.ErrReportData) {
		t.Errorf("Verify(other report data) = %v, want ErrReportData", err)
	}
}

func TestVerifyFake(t *testing.T) {
	mrConfig := sha512.Sum384([]byte("init data"))
	fake, err := tdxfake.New(tdxfake.Options{MrTd: []byte{0x11}, MrConfigID: mrConfig[:], Rtmrs: [4][]byte{3: {0x33}}})
	if err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum384([]byte("nonce and key"))
	var rd64 [64]byte
	copy(rd64[:], rd[:])
	quote, err := fake.GetRawQuote(rd64)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(off int) json.RawMessage {
		q := bytes.Clone(quote)
		q[off] ^= 1
		return evidence(q)
	}
	pemAt := bytes.Index(quote, []byte("-----BEGIN CERTIFICATE-----"))
	fakeRoot := tdx.Options{RootPEM: fake.RootPEM()}
	for _, tc := range []struct {
		name    string
		opts    tdx.Options
		ev      json.RawMessage
		rd      []byte
		wantIs  error
		wantMsg string
	}{
		{"flipped MR_TD", fakeRoot, flip(0x30 + 0x88), rd[:], tdx.ErrSignature, "signature"},
		{"flipped report data", fakeRoot, flip(0x238), rd[:], tdx.ErrSignature, "signature"},
		{"flipped quote signature", fakeRoot, flip(0x27C + 3), rd[:], tdx.ErrSignature, "signature"},
		{"flipped QE report", fakeRoot, flip(0x27C + 0x86 + 0x40), rd[:], tdx.ErrCertificate, "QE report"},
		{"flipped PCK certificate", fakeRoot, flip(pemAt + 200), rd[:], tdx.ErrCertificate, ""},
		{"other report data", fakeRoot, evidence(quote), make([]byte, 48), tdx.ErrReportData, "report data mismatch"},
		{"report data too long", fakeRoot, evidence(quote), make([]byte, 65), nil, "at most 64"},
		{"real Intel root", tdx.Options{RootPEM: intelRoot(t)}, evidence(quote), rd[:], tdx.ErrCertificate, "unknown authority"},
		{"before chain validity", tdx.Options{RootPEM: fake.RootPEM(), Now: func() time.Time { return fake.NotBefore().Add(-time.Hour) }}, evidence(quote), rd[:], tdx.ErrCertificate, "not yet valid"},
		{"garbage", fakeRoot, json.RawMessage(`{"quote":`), rd[:], tdx.ErrMalformed, "malformed"},
		{"truncated quote", fakeRoot, evidence(quote[:len(quote)/2]), rd[:], tdx.ErrMalformed, "signed data size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tdx.New(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(context.Background(), tc.ev, tc.rd)
			if err == nil {
				t.Fatal("Verify succeeded")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("Verify error = %v, want %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Verify error = %v, want it to mention %q", err, tc.wantMsg)
			}
		})
	}

	v, err := tdx.New(fakeRoot)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), evidence(quote), rd[:])
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	body := claims["quote"].(map[string]any)["body"].(map[string]any)
	for k, want := range map[string]string{
		"mr_td":        "11" + strings.Repeat("00", 47),
		"mr_config_id": hex.EncodeToString(mrConfig[:]),
		"rtmr_3":       "33" + strings.Repeat("00", 47),
		"report_data":  hex.EncodeToString(rd64[:]),
	} {
		if body[k] != want {
			t.Errorf("body claim %s = %v, want %s", k, body[k], want)
		}
	}
	if claims["init_data"] != hex.EncodeToString(mrConfig[:]) || claims["report_data"] != hex.EncodeToString(rd64[:]) {
		t.Errorf("init_data/report_data claims = %v / %v", claims["init_data"], claims["report_data"])
	}
	attrs := claims["td_attributes"].(map[string]any)
	wantDebug := binary.LittleEndian.Uint64(quote[0x30+0x78:])&1 != 0
	if attrs["debug"] != wantDebug {
		t.Errorf("td_attributes.debug = %v, want %v", attrs["debug"], wantDebug)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Verify(ctx, evidence(quote), rd[:]); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with cancelled context = %v", err)
	}
}

// TestMalformedQuotes feeds quotes with broken length fields; none may
// panic go-tdx-guest's parser.
func TestMalformedQuotes(t *testing.T) {
	fake, err := tdxfake.New(tdxfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	quote, err := fake.GetRawQuote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	put32 := func(off int, v uint32) []byte { q := bytes.Clone(quote); le.PutUint32(q[off:], v); return q }
	put16 := func(off int, v uint16) []byte { q := bytes.Clone(quote); le.PutUint16(q[off:], v); return q }
	const sd = 0x27C // signed data start
	// PCK chain size: after signature, key, certification data header, QE
	// report, QE signature, auth data and the chain's 2-byte type.
	pckSizeAt := sd + 0x86 + 0x1C2 + int(le.Uint16(quote[sd+0x86+0x1C0:])) + 2
	v5 := put16(0, 5)
	for _, tc := range []struct {
		name    string
		quote   []byte
		wantErr string
	}{
		{"empty", nil, "0 bytes"},
		{"v5", v5, "version 5 unsupported"},
		{"short", quote[:0x300], "at least"},
		{"signed data size huge", put32(0x278, 0xFFFFFFFF), "exceeds"},
		{"signed data size tiny", put32(0x278, 0x10), "signed data is 16 bytes"},
		{"certification size off", put32(sd+0x82, 5), "certification data size"},
		{"auth data size huge", put16(sd+0x86+0x1C0, 0xFFFF), "overruns"},
		{"certification data short", func() []byte {
			q := put32(0x278, 0x86+0x100)
			le.PutUint32(q[sd+0x82:], 0x100)
			return q
		}(), "QE certification data is 256 bytes"},
		{"PCK chain size off", put32(pckSizeAt, 7), "PCK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := tdx.New(tdx.Options{RootPEM: fake.RootPEM()})
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(context.Background(), evidence(tc.quote), nil)
			if !errors.Is(err, tdx.ErrMalformed) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Verify error = %v, want ErrMalformed mentioning %q", err, tc.wantErr)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pem     []byte
		wantErr string
	}{
		{"empty", nil, "no certificate"},
		{"junk", []byte("junk"), "not PEM"},
		{"key", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), "EC PRIVATE KEY"},
		{"bad DER", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tdx.New(tdx.Options{RootPEM: tc.pem})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	fake, err := tdxfake.New(tdxfake.Options{})
	if err != nil {
		f.Fatal(err)
	}
	quote, err := fake.GetRawQuote([64]byte{})
	if err != nil {
		f.Fatal(err)
	}
	v, err := tdx.New(tdx.Options{RootPEM: fake.RootPEM()})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(quote)
	f.Add(quote[:0x400])
	f.Fuzz(func(t *testing.T, q []byte) {
		claims, err := v.Verify(context.Background(), evidence(q), make([]byte, 64))
		if err == nil && claims["report_data"] != strings.Repeat("00", 64) {
			t.Fatalf("accepted quote with report data %v", claims["report_data"])
		}
	})
}
