package snpfake_test

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/abi"

	"github.com/guestd/guestd/test/tee/snpfake"
)

func TestNewOptions(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    snpfake.Options
		wantErr string
	}{
		{"unknown product", snpfake.Options{ProductLine: "Naples"}, "unknown AMD SEV product"},
		{"version 2", snpfake.Options{ReportVersion: 2}, "version 2"},
		{"version 6", snpfake.Options{ReportVersion: 6}, "version 6"},
		{"long measurement", snpfake.Options{Measurement: make([]byte, 49)}, "at most 48"},
		{"long host data", snpfake.Options{HostData: make([]byte, 33)}, "at most 32"},
		{"bad policy", snpfake.Options{Policy: 1}, "policy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := snpfake.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestReports(t *testing.T) {
	for _, tc := range []struct {
		line    string
		version uint32
		fms     [3]byte // family, model, stepping in the report
	}{
		{"Milan", 3, [3]byte{0x19, 0x01, 1}},
		{"Genoa", 5, [3]byte{0x19, 0x11, 1}},
		{"Turin", 4, [3]byte{0x1A, 0x02, 0}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			policy := abi.SnpPolicyToBytes(abi.SnpPolicy{Debug: true, ABIMajor: 1})
			fake, err := snpfake.New(snpfake.Options{ProductLine: tc.line, ReportVersion: tc.version,
				Measurement: []byte{9}, HostData: []byte{8}, Policy: policy})
			if err != nil {
				t.Fatal(err)
			}
			if fake.ProductLine() != tc.line {
				t.Errorf("ProductLine = %s", fake.ProductLine())
			}
			var rd [64]byte
			rd[63] = 0x5A
			raw, err := fake.GetRawQuote(rd)
			if err != nil {
				t.Fatal(err)
			}
			att, err := abi.ReportCertsToProto(raw)
			if err != nil {
				t.Fatalf("go-sev-guest cannot parse the fake's quote: %v", err)
			}
			r := att.GetReport()
			if r.GetVersion() != tc.version || !bytes.Equal(r.GetReportData(), rd[:]) || r.GetPolicy() != policy {
				t.Errorf("report version %d, report data %x, policy %#x", r.GetVersion(), r.GetReportData(), r.GetPolicy())
			}
			if got := [3]byte{raw[0x188], raw[0x189], raw[0x18A]}; got != tc.fms {
				t.Errorf("CPUID fields = %x, want %x", got, tc.fms)
			}
			if r.GetMeasurement()[0] != 9 || r.GetHostData()[0] != 8 {
				t.Errorf("measurement/host data not placed")
			}
			if binary.LittleEndian.Uint32(raw[0x48:]) != 0 {
				t.Errorf("signer info is not VCEK")
			}
			chain := att.GetCertificateChain()
			if len(chain.GetArkCert()) == 0 || len(chain.GetAskCert()) == 0 || len(chain.GetVcekCert()) == 0 {
				t.Errorf("cert table lacks ARK, ASK or VCEK")
			}
			a, _ := fake.GetRawQuote(rd)
			if bytes.Equal(a[0x2A0:0x2A0+144], raw[0x2A0:0x2A0+144]) {
				t.Errorf("two signatures over the same report are equal: signing is not randomized")
			}
			if _, err := fake.GetRawQuoteAtLevel(rd, 1); err == nil {
				t.Errorf("GetRawQuoteAtLevel(VMPL 1) succeeded")
			}
			if fake.Product().GetMachineStepping().GetValue() != uint32(tc.fms[2]) {
				t.Errorf("Product stepping = %v", fake.Product())
			}
		})
	}
}

func TestRootsPEM(t *testing.T) {
	fake, err := snpfake.New(snpfake.Options{ProductLine: "Genoa"})
	if err != nil {
		t.Fatal(err)
	}
	var cns []string
	for rest := fake.RootsPEM(); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if c.NotBefore.After(fake.NotBefore()) {
			t.Errorf("%s valid from %v, after NotBefore %v", c.Subject.CommonName, c.NotBefore, fake.NotBefore())
		}
		cns = append(cns, c.Subject.CommonName)
	}
	sort.Strings(cns)
	if want := []string{"ARK-Genoa", "SEV-Genoa", "SEV-VLEK-Genoa"}; strings.Join(cns, ",") != strings.Join(want, ",") {
		t.Fatalf("roots = %v, want %v", cns, want)
	}
}
