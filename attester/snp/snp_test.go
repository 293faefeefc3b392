package snp_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	spb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/guestd/guestd/attester/conformance"
	"github.com/guestd/guestd/attester/snp"
	snpverifier "github.com/guestd/guestd/test/kbs/verifier/snp"
	"github.com/guestd/guestd/test/tee/snpfake"
)

// newFake returns a fake AMD-SP and a verifier trusting its roots.
func newFake(t *testing.T, opts snpfake.Options) (*snpfake.Provider, *snpverifier.Verifier) {
	t.Helper()
	fake, err := snpfake.New(opts)
	if err != nil {
		t.Fatalf("snpfake.New: %v", err)
	}
	v, err := snpverifier.New(snpverifier.Options{RootsPEM: fake.RootsPEM(), Product: fake.ProductLine()})
	if err != nil {
		t.Fatalf("verifier New: %v", err)
	}
	return fake, v
}

func TestConformance(t *testing.T) {
	for _, opts := range []snpfake.Options{
		{},
		{ProductLine: "Genoa", ReportVersion: 5},
		{ProductLine: "Turin", ReportVersion: 5},
	} {
		name := fmt.Sprintf("%s/v%d", opts.ProductLine, opts.ReportVersion)
		t.Run(name, func(t *testing.T) {
			fake, v := newFake(t, opts)
			conformance.Check(t, snp.New(fake), func(ev json.RawMessage, rd []byte) error {
				_, err := v.Verify(context.Background(), ev, rd)
				return err
			})
		})
	}
}

func TestEvidenceShape(t *testing.T) {
	fake, _ := newFake(t, snpfake.Options{Measurement: bytes.Repeat([]byte{0xAB}, 48), HostData: []byte{1, 2, 3}})
	rd := sha512.Sum384([]byte("shape"))
	ev, err := snp.New(fake).Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	var obj struct {
		Report map[string]json.RawMessage `json:"attestation_report"`
		Chain  []struct {
			CertType json.RawMessage `json:"cert_type"`
			Data     []int           `json:"data"`
		} `json:"cert_chain"`
	}
	if err := json.Unmarshal(ev, &obj); err != nil {
		t.Fatalf("evidence JSON: %v", err)
	}
	var nums []int
	if err := json.Unmarshal(obj.Report["report_data"], &nums); err != nil || len(nums) != 64 {
		t.Fatalf("report_data = %s, want 64 numbers", obj.Report["report_data"])
	}
	for i, n := range nums {
		want := 0
		if i < len(rd) {
			want = int(rd[i])
		}
		if n != want {
			t.Fatalf("report_data[%d] = %d, want %d", i, n, want)
		}
	}
	if got := string(obj.Report["host_data"]); !strings.HasPrefix(got, "[1,2,3,0,") {
		t.Errorf("host_data = %s, want [1,2,3,0,...]", got)
	}
	if got := string(obj.Report["current_tcb"]); got != `{"fmc":null,"bootloader":0,"tee":0,"snp":0,"microcode":0}` {
		t.Errorf("current_tcb = %s", got)
	}
	if got := string(obj.Report["cpuid_fam_id"]); got != "25" {
		t.Errorf("cpuid_fam_id = %s, want 25 (Milan)", got)
	}
	if _, ok := obj.Report["launch_mit_vector"]; ok {
		t.Errorf("version 3 report has launch_mit_vector")
	}
	var types []string
	for _, c := range obj.Chain {
		types = append(types, string(c.CertType))
		if len(c.Data) == 0 {
			t.Errorf("cert %s has no data", c.CertType)
		}
	}
	if want := []string{`"ARK"`, `"ASK"`, `"VCEK"`}; !reflect.DeepEqual(types, want) {
		t.Errorf("cert types = %v, want %v", types, want)
	}
}

// staticProvider returns a fixed raw quote, whatever the report data.
type staticProvider struct {
	raw []byte
	err error
}

func (staticProvider) IsSupported() bool                      { return true }
func (staticProvider) Product() *spb.SevProduct               { return nil }
func (p staticProvider) GetRawQuote([64]byte) ([]byte, error) { return p.raw, p.err }

func TestEvidenceErrors(t *testing.T) {
	fake, _ := newFake(t, snpfake.Options{})
	good, err := fake.GetRawQuote([64]byte{1})
	if err != nil {
		t.Fatal(err)
	}
	reserved := bytes.Clone(good)
	reserved[0x4C] = 1 // reserved byte after KEY_INFO
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		qp      staticProvider
		rd      []byte
		wantErr string
	}{
		{"cancelled", cancelled, staticProvider{raw: good}, []byte{1}, "context canceled"},
		{"report data too long", context.Background(), staticProvider{raw: good}, make([]byte, 65), "at most 64"},
		{"provider error", context.Background(), staticProvider{err: errors.New("EIO")}, []byte{1}, "EIO"},
		{"other report data", context.Background(), staticProvider{raw: good}, []byte{2}, "other report data"},
		{"short report", context.Background(), staticProvider{raw: good[:100]}, []byte{1}, "100 bytes"},
		{"reserved byte", context.Background(), staticProvider{raw: reserved}, []byte{1}, "0x4c"},
		{"bad cert table", context.Background(), staticProvider{raw: append(bytes.Clone(good[:snp.ReportSize]), 1, 2, 3)}, []byte{1}, "cert table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := snp.New(tc.qp).Evidence(tc.ctx, tc.rd)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Evidence error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestEvidenceCertChainNull(t *testing.T) {
	fake, _ := newFake(t, snpfake.Options{})
	full, err := fake.GetRawQuote([64]byte{7})
	if err != nil {
		t.Fatal(err)
	}
	report := full[:snp.ReportSize]
	_, certs, err := snp.ParseEvidence(mustEvidence(t, full))
	if err != nil {
		t.Fatal(err)
	}
	var arkASK []snp.CertEntry
	for _, c := range certs {
		if c.Type() == "ARK" || c.Type() == "ASK" {
			arkASK = append(arkASK, c)
		}
	}
	extra := []snp.CertEntry{{GUID: mustGUID(t, "ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"), Data: []byte{8, 0, 0, 0, 0x10, 0x0f, 0xa0, 0}}}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"no table", report},
		{"empty table", append(bytes.Clone(report), make([]byte, 24)...)},
		{"go-sev-guest platform info only", append(bytes.Clone(report), snp.MarshalCertTable(extra)...)},
		{"no endorsement key", append(bytes.Clone(report), snp.MarshalCertTable(arkASK)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(mustEvidence(t, tc.raw), &obj); err != nil {
				t.Fatal(err)
			}
			if got := string(obj["cert_chain"]); got != "null" {
				t.Fatalf("cert_chain = %.80s, want null", got)
			}
		})
	}
}

func mustEvidence(t *testing.T, raw []byte) []byte {
	t.Helper()
	var rd [64]byte
	copy(rd[:], raw[0x50:0x90])
	ev, err := snp.New(staticProvider{raw: raw}).Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	return ev
}
