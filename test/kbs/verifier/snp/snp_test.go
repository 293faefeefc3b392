package snp_test

import (
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/verify/trust"

	snpev "github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/test/kbs/verifier/snp"
	"github.com/guestd/guestd/test/tee/snpfake"
)

const golden = "testdata/trustee-e2e-evidence.json"

// goldenCase returns trustee's real Genoa evidence, its report data and a
// time inside its VCEK's validity.
func goldenCase(t *testing.T) (json.RawMessage, []byte, time.Time) {
	t.Helper()
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	raw, certs, err := snpev.ParseEvidence(data)
	if err != nil {
		t.Fatal(err)
	}
	vcek, err := x509.ParseCertificate(certs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return data, raw[0x50:0x90], vcek.NotBefore.Add(24 * time.Hour)
}

// TestGoldenRealRoots verifies a genuine AMD report: it proves the JSON to
// ABI encoding reproduces the signed bytes exactly.
func TestGoldenRealRoots(t *testing.T) {
	ev, rd, now := goldenCase(t)
	v, err := snp.New(snp.Options{RootsPEM: trust.AskArkGenoaVcekBytes, Product: "Genoa", Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), ev, rd)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := map[string]any{
		"measurement":             "6a6519d757e68c2e939c9dbbbc1828498e8de35d2766dd05f1a2cca5059d0cf4ae62a36d75c837974dd50b315506e73e",
		"report_data":             hex.EncodeToString(rd),
		"init_data":               strings.Repeat("00", 32),
		"policy_smt_allowed":      true,
		"policy_debug_allowed":    false,
		"policy_migrate_ma":       false,
		"policy_single_socket":    false,
		"policy_abi_major":        0,
		"policy_abi_minor":        0,
		"reported_tcb_bootloader": 10,
		"reported_tcb_tee":        0,
		"reported_tcb_snp":        23,
		"reported_tcb_microcode":  25,
		"platform_smt_enabled":    true,
		"platform_tsme_enabled":   false,
	}
	for k, w := range want {
		if claims[k] != w {
			t.Errorf("claim %s = %v, want %v", k, claims[k], w)
		}
	}
	if got, _ := claims["chip_id"].(string); !strings.HasPrefix(got, "371c55d6d15cb50f") {
		t.Errorf("chip_id = %v", claims["chip_id"])
	}

	other := sha512.Sum384([]byte("other"))
	if _, err := v.Verify(context.Background(), ev, other[:]); !errors.Is(err, snp.ErrReportData) || !strings.Contains(err.Error(), "report data mismatch") {
		t.Errorf("Verify(other report data) = %v, want ErrReportData", err)
	}
}

func TestVerifyFake(t *testing.T) {
	fake, err := snpfake.New(snpfake.Options{Measurement: []byte{0xAA, 0xBB}, HostData: []byte{0xCC}})
	if err != nil {
		t.Fatal(err)
	}
	rd := sha512.Sum384([]byte("nonce and key"))
	var rd64 [64]byte
	copy(rd64[:], rd[:])
	raw, err := fake.GetRawQuote(rd64)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := snpev.EvidenceFromQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	good, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(e *snpev.Evidence)) json.RawMessage {
		c := *ev
		c.CertChain = append([]snpev.CertEntry(nil), ev.CertChain...)
		f(&c)
		out, err := json.Marshal(&c)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	fakeRoots := snp.Options{RootsPEM: fake.RootsPEM(), Product: fake.ProductLine()}
	for _, tc := range []struct {
		name    string
		opts    snp.Options
		ev      json.RawMessage
		rd      []byte
		wantIs  error
		wantMsg string
	}{
		{"flipped measurement", fakeRoots, edit(func(e *snpev.Evidence) { e.AttestationReport.Measurement[0] ^= 1 }), rd[:], snp.ErrSignature, "signature"},
		{"flipped signature", fakeRoots, edit(func(e *snpev.Evidence) { e.AttestationReport.Signature.R[5] ^= 1 }), rd[:], snp.ErrSignature, "signature"},
		{"other report data", fakeRoots, good, make([]byte, 48), snp.ErrReportData, "report data mismatch"},
		{"report data too long", fakeRoots, good, make([]byte, 65), nil, "at most 64"},
		{"real Milan roots", snp.Options{RootsPEM: trust.AskArkMilanVcekBytes, Product: "Milan"}, good, rd[:], snp.ErrCertificate, "unknown authority"},
		{"other product line", snp.Options{RootsPEM: trust.AskArkGenoaVcekBytes, Product: "Genoa"}, good, rd[:], snp.ErrCertificate, "Milan processor"},
		{"before chain validity", snp.Options{RootsPEM: fake.RootsPEM(), Product: "Milan", Now: func() time.Time { return fake.NotBefore().Add(-48 * time.Hour) }}, good, rd[:], snp.ErrCertificate, "not yet valid"},
		{"no cert chain", fakeRoots, edit(func(e *snpev.Evidence) { e.CertChain = nil }), rd[:], snp.ErrCertificate, "no VCEK"},
		{"VCEK replaced by ASK", fakeRoots, edit(func(e *snpev.Evidence) { e.CertChain[2].Data = e.CertChain[1].Data }), rd[:], snp.ErrCertificate, ""},
		{"garbage", fakeRoots, json.RawMessage(`{"attestation_report":`), rd[:], snp.ErrMalformed, "malformed"},
		{"version 2", fakeRoots, edit(func(e *snpev.Evidence) {
			e.AttestationReport.Version = 2
			e.AttestationReport.CPUIDFamID, e.AttestationReport.CPUIDModID, e.AttestationReport.CPUIDStep = nil, nil, nil
			e.AttestationReport.ChipID[20] = 1
		}), rd[:], snp.ErrMalformed, "version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := snp.New(tc.opts)
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

	v, err := snp.New(fakeRoots)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(context.Background(), good, rd[:])
	if err != nil {
		t.Fatalf("Verify(good): %v", err)
	}
	if got := claims["measurement"]; got != "aabb"+strings.Repeat("00", 46) {
		t.Errorf("measurement claim = %v", got)
	}
	if got := claims["init_data"]; got != "cc"+strings.Repeat("00", 31) {
		t.Errorf("init_data claim = %v", got)
	}
	if got := claims["report_data"]; got != hex.EncodeToString(rd64[:]) {
		t.Errorf("report_data claim = %v", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Verify(ctx, good, rd[:]); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with cancelled context = %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	fake, err := snpfake.New(snpfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var blocks []*pem.Block
	for rest := fake.RootsPEM(); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	ark, ask := pem.EncodeToMemory(blocks[0]), pem.EncodeToMemory(blocks[1])
	realARK := []byte(strings.SplitAfter(string(trust.AskArkMilanVcekBytes), "-----END CERTIFICATE-----\n")[1])
	for _, tc := range []struct {
		name    string
		opts    snp.Options
		wantErr string
	}{
		{"unknown product", snp.Options{RootsPEM: fake.RootsPEM(), Product: "Naples"}, "unknown AMD SEV product"},
		{"no roots", snp.Options{Product: "Milan"}, "need an ARK"},
		{"ARK only", snp.Options{RootsPEM: ark, Product: "Milan"}, "need an ARK"},
		{"not PEM", snp.Options{RootsPEM: []byte("junk"), Product: "Milan"}, "not PEM"},
		{"key block", snp.Options{RootsPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), Product: "Milan"}, "PRIVATE KEY"},
		{"two ASKs", snp.Options{RootsPEM: append(append(append([]byte(nil), ark...), ask...), ask...), Product: "Milan"}, "two certificates"},
		{"ASK from another ARK", snp.Options{RootsPEM: append(append([]byte(nil), realARK...), ask...), Product: "Milan"}, "not signed by the ARK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := snp.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want %q", err, tc.wantErr)
			}
		})
	}
}
