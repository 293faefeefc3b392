package tdx_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/attester/conformance"
	"github.com/guestd/guestd/attester/tdx"
	tdxverifier "github.com/guestd/guestd/test/kbs/verifier/tdx"
	"github.com/guestd/guestd/test/tee/tdxfake"
)

func newFake(t testing.TB) *tdxfake.Provider {
	t.Helper()
	fake, err := tdxfake.New(tdxfake.Options{})
	if err != nil {
		t.Fatalf("tdxfake.New: %v", err)
	}
	return fake
}

func TestConformance(t *testing.T) {
	fake := newFake(t)
	v, err := tdxverifier.New(tdxverifier.Options{RootPEM: fake.RootPEM()})
	if err != nil {
		t.Fatal(err)
	}
	ccel := filepath.Join(t.TempDir(), "CCEL")
	if err := os.WriteFile(ccel, []byte("event log"), 0o600); err != nil {
		t.Fatal(err)
	}
	conformance.Check(t, tdx.New(fake, tdx.Options{CCELPath: ccel}), func(ev json.RawMessage, rd []byte) error {
		_, err := v.Verify(context.Background(), ev, rd)
		return err
	})
}

func TestEvidenceShape(t *testing.T) {
	fake := newFake(t)
	dir := t.TempDir()
	ccel := filepath.Join(dir, "CCEL")
	log := []byte{0, 1, 2, 0xFF, 0xFE}
	if err := os.WriteFile(ccel, log, 0o600); err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum384([]byte("shape"))
	for _, tc := range []struct {
		name     string
		path     string
		wantCCEL string // JSON value
	}{
		{"with event log", ccel, `"` + base64.StdEncoding.EncodeToString(log) + `"`},
		{"no event log", filepath.Join(dir, "absent"), "null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := tdx.New(fake, tdx.Options{CCELPath: tc.path}).Evidence(context.Background(), rd[:])
			if err != nil {
				t.Fatalf("Evidence: %v", err)
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(ev, &obj); err != nil {
				t.Fatal(err)
			}
			if len(obj) != 2 {
				t.Errorf("evidence has keys %v, want cc_eventlog and quote", obj)
			}
			if got := string(obj["cc_eventlog"]); got != tc.wantCCEL {
				t.Errorf("cc_eventlog = %s, want %s", got, tc.wantCCEL)
			}
			var b64 string
			if err := json.Unmarshal(obj["quote"], &b64); err != nil {
				t.Fatal(err)
			}
			quote, err := base64.StdEncoding.DecodeString(b64)
			if err != nil {
				t.Fatalf("quote is not std base64: %v", err)
			}
			got, err := tdx.QuoteReportData(quote)
			if err != nil {
				t.Fatal(err)
			}
			if want := append(rd[:], make([]byte, 16)...); !bytes.Equal(got, want) {
				t.Errorf("quote report data = %x, want %x", got, want)
			}
			q2, ccel2, err := tdx.ParseEvidence(ev)
			if err != nil || !bytes.Equal(q2, quote) {
				t.Fatalf("ParseEvidence = %v", err)
			}
			if (ccel2 == nil) != (tc.wantCCEL == "null") {
				t.Errorf("ParseEvidence cc_eventlog = %x", ccel2)
			}
		})
	}
}

// rawProvider returns a fixed quote, whatever the report data.
type rawProvider struct {
	quote []byte
	err   error
}

func (rawProvider) IsSupported() error                     { return nil }
func (p rawProvider) GetRawQuote([64]byte) ([]byte, error) { return p.quote, p.err }

func TestEvidenceErrors(t *testing.T) {
	fake := newFake(t)
	quote, err := fake.GetRawQuote([64]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	v3 := bytes.Clone(quote)
	v3[0] = 3
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	dirAsFile := t.TempDir() // reading a directory fails with something other than "not exist"
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		qp      rawProvider
		rd      []byte
		ccel    string
		wantErr string
	}{
		{"cancelled", cancelled, rawProvider{quote: quote}, []byte{1}, "", "context canceled"},
		{"report data too long", context.Background(), rawProvider{quote: quote}, make([]byte, 65), "", "at most 64"},
		{"provider error", context.Background(), rawProvider{err: errors.New("EIO")}, []byte{1}, "", "EIO"},
		{"other report data", context.Background(), rawProvider{quote: quote}, []byte{2}, "", "other report data"},
		{"short quote", context.Background(), rawProvider{quote: quote[:100]}, []byte{1}, "", "too short"},
		{"SGX quote", context.Background(), rawProvider{quote: v3}, []byte{1}, "", "version 3"},
		{"unreadable event log", context.Background(), rawProvider{quote: quote}, []byte{1}, dirAsFile, "read event log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tdx.New(tc.qp, tdx.Options{CCELPath: tc.ccel}).Evidence(tc.ctx, tc.rd)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Evidence error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestQuoteReportData(t *testing.T) {
	v5 := make([]byte, 0x36+0x208+64)
	v5[0] = 5
	v5[0x30] = 3 // TDX 1.5 body
	copy(v5[0x36+0x208:], bytes.Repeat([]byte{0xAB}, 64))
	v5sgx := bytes.Clone(v5)
	v5sgx[0x30] = 1
	for _, tc := range []struct {
		name    string
		in      []byte
		want    []byte
		wantErr string
	}{
		{"v5 TDX 1.5", v5, bytes.Repeat([]byte{0xAB}, 64), ""},
		{"v5 SGX body", v5sgx, nil, "not a TD report"},
		{"v5 short", v5[:0x31], nil, "v5 is 49 bytes"},
		{"empty", nil, nil, "0 bytes"},
		{"v4 short", []byte{4, 0, 0}, nil, "too short"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tdx.QuoteReportData(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, %v", got, err)
			}
		})
	}
}

func TestParseEvidenceErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      string
		wantErr string
	}{
		{"empty", "", "parse tdx evidence"},
		{"garbage", "{", "parse tdx evidence"},
		{"null", "null", "missing quote"},
		{"no quote", `{"cc_eventlog":null}`, "missing quote"},
		{"quote not base64", `{"quote":"!!"}`, "quote"},
		{"url-safe base64", `{"quote":"-_-_"}`, "quote"},
		{"quote a number", `{"quote":5}`, "parse tdx evidence"},
		{"event log not base64", `{"quote":"AAAA","cc_eventlog":"%"}`, "cc_eventlog"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := tdx.ParseEvidence([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseEvidence error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func FuzzParseEvidence(f *testing.F) {
	fake := newFake(f)
	ev, err := tdx.New(fake, tdx.Options{CCELPath: "/nonexistent"}).Evidence(context.Background(), []byte{1})
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(ev))
	f.Add([]byte(`{"quote":"BAA=","cc_eventlog":""}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		quote, _, err := tdx.ParseEvidence(in)
		if err != nil {
			return
		}
		// Any decoded quote: report data extraction must not panic.
		_, _ = tdx.QuoteReportData(quote)
	})
}
