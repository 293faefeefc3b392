package tdxfake_test

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/guestd/guestd/test/tee/tdxfake"
)

func chain(t *testing.T, raw []byte) []*x509.Certificate {
	t.Helper()
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatalf("go-tdx-guest cannot parse the quote: %v", err)
	}
	rest := q.(*pb.QuoteV4).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 3 {
		t.Fatalf("chain has %d certificates", len(certs))
	}
	return certs
}

func TestChainMirrorsIntel(t *testing.T) {
	fake, err := tdxfake.New(tdxfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := fake.GetRawQuote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	got, real := chain(t, raw), chain(t, testdata.RawQuote)
	for i, want := range []string{"Intel SGX PCK Certificate", "Intel SGX PCK Platform CA", "Intel SGX Root CA"} {
		if got[i].Subject.CommonName != want || got[i].Subject.String() != real[i].Subject.String() {
			t.Errorf("cert %d subject = %s, want %s", i, got[i].Subject, real[i].Subject)
		}
		if got[i].SignatureAlgorithm != x509.ECDSAWithSHA256 {
			t.Errorf("cert %d signed with %v", i, got[i].SignatureAlgorithm)
		}
		if bytes.Equal(got[i].Raw, real[i].Raw) {
			t.Errorf("cert %d is Intel's", i)
		}
	}
	aki := asn1.ObjectIdentifier{2, 5, 29, 35}
	exts := map[string][]byte{}
	for _, e := range got[0].Extensions {
		exts[e.Id.String()] = e.Value
	}
	if len(got[0].Extensions) != len(real[0].Extensions) {
		t.Errorf("PCK has %d extensions, Intel's %d", len(got[0].Extensions), len(real[0].Extensions))
	}
	for _, e := range real[0].Extensions {
		if v, ok := exts[e.Id.String()]; !ok || (!e.Id.Equal(aki) && !bytes.Equal(v, e.Value)) {
			t.Errorf("PCK extension %s differs from Intel's", e.Id)
		}
	}
	gotExt, err := pcs.PckCertificateExtensions(got[0])
	if err != nil {
		t.Fatalf("PckCertificateExtensions: %v", err)
	}
	realExt, _ := pcs.PckCertificateExtensions(real[0])
	if gotExt.FMSPC != realExt.FMSPC || gotExt.PCEID != realExt.PCEID {
		t.Errorf("FMSPC/PCEID = %s/%s, want %s/%s", gotExt.FMSPC, gotExt.PCEID, realExt.FMSPC, realExt.PCEID)
	}
	root, _ := pem.Decode(fake.RootPEM())
	if root == nil || !bytes.Equal(root.Bytes, got[2].Raw) {
		t.Errorf("RootPEM is not the chain's root")
	}
	if got[2].NotBefore.After(fake.NotBefore()) {
		t.Errorf("root valid from %v, after NotBefore %v", got[2].NotBefore, fake.NotBefore())
	}
}

func TestGetRawQuote(t *testing.T) {
	fake, err := tdxfake.New(tdxfake.Options{MrConfigID: []byte{1, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := fake.IsSupported(); err != nil {
		t.Fatalf("IsSupported: %v", err)
	}
	rd := [64]byte{63: 7}
	a, err := fake.GetRawQuote(rd)
	if err != nil {
		t.Fatal(err)
	}
	b, err := fake.GetRawQuote([64]byte{})
	if err != nil {
		t.Fatal(err)
	}
	qa, _ := abi.QuoteToProto(a)
	body := qa.(*pb.QuoteV4).GetTdQuoteBody()
	if !bytes.Equal(body.GetReportData(), rd[:]) {
		t.Errorf("report data = %x", body.GetReportData())
	}
	if !bytes.Equal(body.GetMrConfigId(), append([]byte{1, 2}, make([]byte, 46)...)) {
		t.Errorf("MR_CONFIG_ID = %x", body.GetMrConfigId())
	}
	if len(a) != len(b) || bytes.Equal(a, b) {
		t.Errorf("quotes for different report data: lengths %d/%d, equal %v", len(a), len(b), bytes.Equal(a, b))
	}
}

func TestNewOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts tdxfake.Options
	}{
		{"long MrTd", tdxfake.Options{MrTd: make([]byte, 49)}},
		{"long MrConfigID", tdxfake.Options{MrConfigID: make([]byte, 49)}},
		{"long RTMR", tdxfake.Options{Rtmrs: [4][]byte{2: make([]byte, 49)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := tdxfake.New(tc.opts); err == nil || !strings.Contains(err.Error(), "at most 48") {
				t.Fatalf("New error = %v", err)
			}
		})
	}
}
