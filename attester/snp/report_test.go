package snp_test

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/test/tee/snpfake"
)

const golden = "testdata/trustee-e2e-evidence.json"

func mustGUID(t *testing.T, s string) uuid.UUID {
	t.Helper()
	g, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func jsonEqual(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("got is not JSON: %v", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("want is not JSON: %v", err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs:\n got %.400s\nwant %.400s", got, want)
	}
}

// TestGolden reads trustee's e2e SNP evidence (a real Genoa report), turns
// it into ABI bytes and back, and checks the JSON comes out as it went in.
func TestGolden(t *testing.T) {
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	raw, certs, err := snp.ParseEvidence(data)
	if err != nil {
		t.Fatalf("ParseEvidence: %v", err)
	}
	if len(raw) != snp.ReportSize {
		t.Fatalf("report is %d bytes", len(raw))
	}
	if err := snp.Lossless(raw); err != nil {
		t.Fatalf("Lossless: %v", err)
	}
	if len(certs) != 1 || certs[0].Type() != "VCEK" || len(certs[0].Data) != 1347 {
		t.Fatalf("certs = %d entries, want one 1347-byte VCEK", len(certs))
	}
	// Spot-check ABI offsets against values visible in the JSON.
	if raw[0] != 3 || raw[0x188] != 0x19 || raw[0x189] != 0xA0 || raw[0x18A] != 2 {
		t.Errorf("version/cpuid bytes = %x %x %x %x", raw[0], raw[0x188], raw[0x189], raw[0x18A])
	}
	if raw[0x180] != 10 || raw[0x181] != 0 || raw[0x186] != 23 || raw[0x187] != 25 {
		t.Errorf("reported_tcb bytes = %x, want bl 10, tee 0, snp 23, ucode 25", raw[0x180:0x188])
	}
	if raw[0x1E8] != 40 || raw[0x1E9] != 55 || raw[0x1EA] != 1 {
		t.Errorf("current version bytes = %x, want build 40 minor 55 major 1", raw[0x1E8:0x1EB])
	}
	if raw[0x50] != 126 || raw[0x2A0] != 248 || raw[0x2A0+72] != 7 {
		t.Errorf("report_data/signature bytes misplaced")
	}
	rep, err := snp.ReportFromABI(raw)
	if err != nil {
		t.Fatalf("ReportFromABI: %v", err)
	}
	out, err := json.Marshal(snp.Evidence{AttestationReport: *rep, CertChain: certs})
	if err != nil {
		t.Fatal(err)
	}
	jsonEqual(t, out, data)
	again, err := rep.ABI()
	if err != nil || !bytes.Equal(again, raw) {
		t.Fatalf("ABI round trip differs (err %v)", err)
	}
}

// TestReportRoundTrip checks ABI -> JSON -> ABI for the fake's report
// layouts, including Turin's TCB with FMC and version 5's vectors.
func TestReportRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		line    string
		version uint32
		wantTCB string
	}{
		{"Milan", 3, `{"fmc":null,"bootloader":0,"tee":0,"snp":0,"microcode":0}`},
		{"Genoa", 4, `{"fmc":null,"bootloader":0,"tee":0,"snp":0,"microcode":0}`},
		{"Genoa", 5, `{"fmc":null,"bootloader":0,"tee":0,"snp":0,"microcode":0}`},
		{"Turin", 5, `{"fmc":0,"bootloader":0,"tee":0,"snp":0,"microcode":0}`},
	} {
		t.Run(tc.line, func(t *testing.T) {
			fake, err := snpfake.New(snpfake.Options{ProductLine: tc.line, ReportVersion: tc.version})
			if err != nil {
				t.Fatal(err)
			}
			raw, err := fake.GetRawQuote([64]byte{0xEE})
			if err != nil {
				t.Fatal(err)
			}
			// Put distinct values in every TCB byte the layout keeps.
			for _, off := range []int{0x38, 0x180, 0x1E0, 0x1F0} {
				if tc.line == "Turin" {
					copy(raw[off:], []byte{1, 2, 3, 4, 0, 0, 0, 8})
				} else {
					copy(raw[off:], []byte{1, 2, 0, 0, 0, 0, 7, 8})
				}
			}
			rep, err := snp.ReportFromABI(raw)
			if err != nil {
				t.Fatal(err)
			}
			js, err := json.Marshal(rep)
			if err != nil {
				t.Fatal(err)
			}
			var back snp.Report
			if err := json.Unmarshal(js, &back); err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			abi, err := back.ABI()
			if err != nil {
				t.Fatalf("ABI: %v", err)
			}
			if !bytes.Equal(abi, raw[:snp.ReportSize]) {
				t.Fatalf("round trip differs")
			}
			var obj map[string]json.RawMessage
			if err := json.Unmarshal(js, &obj); err != nil {
				t.Fatal(err)
			}
			if tc.line == "Turin" {
				if got := string(obj["reported_tcb"]); got != `{"fmc":1,"bootloader":2,"tee":3,"snp":4,"microcode":8}` {
					t.Errorf("Turin reported_tcb = %s", got)
				}
			} else if got := string(obj["reported_tcb"]); got != `{"fmc":null,"bootloader":1,"tee":2,"snp":7,"microcode":8}` {
				t.Errorf("reported_tcb = %s", got)
			}
			_, hasMit := obj["launch_mit_vector"]
			if hasMit != (tc.version >= 5) {
				t.Errorf("launch_mit_vector present = %v for version %d", hasMit, tc.version)
			}
		})
	}
}

// mutate returns the golden evidence with its report edited by f.
func mutate(t *testing.T, f func(r map[string]any)) []byte {
	t.Helper()
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]any
	if err := json.Unmarshal(data, &ev); err != nil {
		t.Fatal(err)
	}
	f(ev["attestation_report"].(map[string]any))
	out, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestParseEvidenceErrors(t *testing.T) {
	data, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, "parse snp evidence"},
		{"garbage", []byte("not json"), "parse snp evidence"},
		{"truncated", data[:len(data)/2], "parse snp evidence"},
		{"null", []byte("null"), "not a JSON object"},
		{"array", []byte("[1,2]"), "parse snp evidence"},
		{"no report", []byte(`{"cert_chain":null}`), "missing attestation_report"},
		{"null report", []byte(`{"attestation_report":null}`), "null"},
		{"empty report", []byte(`{"attestation_report":{}}`), "missing fields"},
		{"short report_data", mutate(t, func(r map[string]any) { r["report_data"] = []int{1, 2} }), "report_data has 2 bytes"},
		{"long measurement", mutate(t, func(r map[string]any) { r["measurement"] = make([]int, 49) }), "measurement has 49 bytes"},
		{"base64 chip_id", mutate(t, func(r map[string]any) { r["chip_id"] = "AAAA" }), "not a JSON array"},
		{"byte out of range", mutate(t, func(r map[string]any) { r["host_data"] = append(make([]any, 31), 256) }), "256"},
		{"negative", mutate(t, func(r map[string]any) { r["vmpl"] = -1 }), "-1"},
		{"missing signature", mutate(t, func(r map[string]any) { delete(r, "signature") }), "signature"},
		{"short signature", mutate(t, func(r map[string]any) { r["signature"] = map[string]any{"r": []int{1}, "s": []int{1}} }), "signature.r has 1 bytes"},
		{"tcb missing part", mutate(t, func(r map[string]any) { r["reported_tcb"] = map[string]any{"bootloader": 1} }), "needs bootloader"},
		{"fmc on Genoa", mutate(t, func(r map[string]any) { r["launch_tcb"].(map[string]any)["fmc"] = 1 }), "fmc is set"},
		{"unknown cpu", mutate(t, func(r map[string]any) { r["cpuid_fam_id"] = 0x17 }), "not a known SEV-SNP processor"},
		{"v3 without cpuid", mutate(t, func(r map[string]any) { r["cpuid_mod_id"] = nil }), "needs cpuid"},
		{"version 1", mutate(t, func(r map[string]any) { r["version"] = 1 }), "version 1"},
		{"mit vector on v3", mutate(t, func(r map[string]any) { r["launch_mit_vector"] = 1 }), "no mitigation vectors"},
		{"bad cert type", []byte(strings.Replace(string(data), `"VCEK"`, `"NOPE"`, 1)), "unknown cert_type"},
		{"bad OTHER guid", []byte(strings.Replace(string(data), `"VCEK"`, `{"OTHER":"x"}`, 1)), "OTHER guid"},
		{"null cert entry", []byte(strings.Replace(string(data), `"cert_chain":[`, `"cert_chain":[null,`, 1)), "needs cert_type and data"},
		{"cert without data", []byte(strings.Replace(string(data), `"data":[`, `"dat":[`, 1)), "needs cert_type and data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := snp.ParseEvidence(tc.in)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseEvidence error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestCertEntryJSON(t *testing.T) {
	other := mustGUID(t, "01234567-89ab-cdef-0123-456789abcdef")
	for _, tc := range []struct {
		entry snp.CertEntry
		json  string
	}{
		{snp.CertEntry{GUID: mustGUID(t, snp.GUIDVCEK), Data: []byte{1, 2}}, `{"cert_type":"VCEK","data":[1,2]}`},
		{snp.CertEntry{GUID: mustGUID(t, snp.GUIDVLEK), Data: []byte{}}, `{"cert_type":"VLEK","data":[]}`},
		{snp.CertEntry{GUID: mustGUID(t, snp.GUIDARK), Data: []byte{255}}, `{"cert_type":"ARK","data":[255]}`},
		{snp.CertEntry{GUID: mustGUID(t, snp.GUIDASK), Data: []byte{0}}, `{"cert_type":"ASK","data":[0]}`},
		{snp.CertEntry{GUID: mustGUID(t, snp.GUIDCRL), Data: []byte{3}}, `{"cert_type":"CRL","data":[3]}`},
		{snp.CertEntry{GUID: uuid.Nil, Data: []byte{4}}, `{"cert_type":"Empty","data":[4]}`},
		{snp.CertEntry{GUID: other, Data: []byte{5}}, `{"cert_type":{"OTHER":"01234567-89ab-cdef-0123-456789abcdef"},"data":[5]}`},
	} {
		t.Run(tc.entry.Type(), func(t *testing.T) {
			got, err := json.Marshal(tc.entry)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.json {
				t.Fatalf("Marshal = %s, want %s", got, tc.json)
			}
			var back snp.CertEntry
			if err := json.Unmarshal(got, &back); err != nil {
				t.Fatal(err)
			}
			if back.GUID != tc.entry.GUID || !bytes.Equal(back.Data, tc.entry.Data) {
				t.Fatalf("round trip = %+v, want %+v", back, tc.entry)
			}
		})
	}
}

func TestParseCertTable(t *testing.T) {
	vcek := snp.CertEntry{GUID: mustGUID(t, snp.GUIDVCEK), Data: []byte("vcek")}
	ask := snp.CertEntry{GUID: mustGUID(t, snp.GUIDASK), Data: []byte("ask!")}
	good := snp.MarshalCertTable([]snp.CertEntry{vcek, ask})
	entry := func(guid uuid.UUID, off, n uint32) []byte {
		b := make([]byte, 24)
		copy(b, guid[:])
		b[16], b[17], b[18], b[19] = byte(off), byte(off>>8), byte(off>>16), byte(off>>24)
		b[20], b[21], b[22], b[23] = byte(n), byte(n>>8), byte(n>>16), byte(n>>24)
		return b
	}
	terminator := make([]byte, 24)
	for _, tc := range []struct {
		name    string
		in      []byte
		want    int
		wantErr string
	}{
		{"empty", nil, 0, ""},
		{"only terminator", terminator, 0, ""},
		{"two entries", good, 2, ""},
		{"no terminator", entry(vcek.GUID, 24, 0), 0, "no terminator"},
		{"short", []byte{1, 2, 3}, 0, "no terminator"},
		{"out of range", append(entry(vcek.GUID, 48, 100), terminator...), 0, "spans bytes"},
		{"offset overflow", append(entry(vcek.GUID, 0xFFFFFFF0, 0x20), terminator...), 0, "spans bytes"},
		{"into header", append(append(entry(vcek.GUID, 0, 4), terminator...), 1, 2, 3, 4), 0, "into the table header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := snp.ParseCertTable(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || len(got) != tc.want {
				t.Fatalf("got %d entries, err %v; want %d", len(got), err, tc.want)
			}
			if tc.want == 2 && (!bytes.Equal(got[0].Data, vcek.Data) || got[1].GUID != ask.GUID) {
				t.Fatalf("entries = %+v", got)
			}
		})
	}
}

func FuzzParseEvidence(f *testing.F) {
	data, err := os.ReadFile(golden)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte(`{"attestation_report":{}}`))
	f.Add([]byte(`{"attestation_report":null,"cert_chain":[{"cert_type":{"OTHER":"x"},"data":[1]}]}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, _, err := snp.ParseEvidence(in)
		if err == nil && len(raw) != snp.ReportSize {
			t.Fatalf("ParseEvidence returned a %d-byte report", len(raw))
		}
	})
}

func FuzzReportFromABI(f *testing.F) {
	fake, err := snpfake.New(snpfake.Options{})
	if err != nil {
		f.Fatal(err)
	}
	raw, err := fake.GetRawQuote([64]byte{})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add(raw[:snp.ReportSize])
	f.Fuzz(func(t *testing.T, in []byte) {
		// Whatever the input, no panic; lossless reports round-trip.
		if _, err := snp.EvidenceFromQuote(in); err != nil {
			return
		}
		rep, err := snp.ReportFromABI(in)
		if err != nil {
			t.Fatalf("EvidenceFromQuote accepted what ReportFromABI rejects: %v", err)
		}
		again, err := rep.ABI()
		if err != nil || !bytes.Equal(again, in[:snp.ReportSize]) {
			t.Fatalf("accepted report does not round-trip (err %v)", err)
		}
	})
}
