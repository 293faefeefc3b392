package tpm_test

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"

	pb "github.com/google/go-tpm-tools/proto/tpm"
	tpmquote "github.com/google/go-tpm-tools/quote"

	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/test/swtpm"
)

// upstreamEvidence is evidence from the upstream Rust attester (see
// testdata/README.md).
func upstreamEvidence(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/trustee_tpm_evidence.json")
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return b
}

func TestParseEvidenceUpstreamFixture(t *testing.T) {
	p, err := tpm.ParseEvidence(upstreamEvidence(t))
	if err != nil {
		t.Fatalf("ParseEvidence(upstream fixture): %v", err)
	}
	if k, ok := p.AKPublic.(*rsa.PublicKey); !ok || k.N.BitLen() != 2048 {
		t.Fatalf("AK is %T, want RSA-2048", p.AKPublic)
	}
	if p.SigAlg != 0x0014 || p.SigHash != 0x000b || len(p.Sig) != 256 {
		t.Fatalf("signature alg %#x hash %#x len %d, want RSASSA SHA-256 256 bytes", p.SigAlg, p.SigHash, len(p.Sig))
	}
	// The fixture predates 32-byte report data: a SHA-384 digest padded to 64.
	if len(p.Nonce) != 64 || !bytes.Equal(p.Nonce[48:], make([]byte, 16)) {
		t.Fatalf("nonce %x, want 48 bytes of digest and 16 zeros", p.Nonce)
	}
	if len(p.Selection) != 1 || p.Selection[0].Hash != 0x000b || len(p.Selection[0].PCRs) != 24 || p.Selection[0].PCRs[23] != 23 {
		t.Fatalf("selection %+v, want SHA-256 PCRs 0-23", p.Selection)
	}
	if len(p.PCRDigest) != 32 || len(p.PCRs) != 24 || !bytes.Equal(p.PCRs[17], bytes.Repeat([]byte{0xff}, 32)) {
		t.Fatalf("digest %x, %d PCRs, PCR17 %x", p.PCRDigest, len(p.PCRs), p.PCRs[17])
	}
}

// mutate decodes the fixture, applies f to it and re-encodes it.
func mutate(t testing.TB, f func(m map[string]any, q map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(upstreamEvidence(t), &m); err != nil {
		t.Fatal(err)
	}
	f(m, m["tpm_quote"].(map[string]any))
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rewrite replaces the bytes of a base64 field by edit(bytes).
func rewrite(t testing.TB, edit func([]byte) []byte) func(string) string {
	return func(s string) string {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(edit(b))
	}
}

func TestParseEvidenceRejects(t *testing.T) {
	flip := func(i int) func([]byte) []byte {
		return func(b []byte) []byte { b[i] ^= 0xff; return b }
	}
	cut := func(n int) func([]byte) []byte { return func(b []byte) []byte { return b[:n] } }
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "JSON"},
		{"not JSON", []byte("tpm"), "JSON"},
		{"array", []byte(`[]`), "JSON"},
		{"null", []byte(`null`), "ak_public"},
		{"empty object", []byte(`{}`), "ak_public"},
		{"ak_public not a string", []byte(`{"ak_public":1}`), "JSON"},
		{"ak_public not base64", mutate(t, func(m, q map[string]any) { m["ak_public"] = "%%%" }), "ak_public"},
		{"ak_public url base64", mutate(t, func(m, q map[string]any) {
			m["ak_public"] = strings.NewReplacer("+", "-", "/", "_").Replace(m["ak_public"].(string))
		}), "ak_public"},
		{"ak_public not DER", mutate(t, func(m, q map[string]any) { m["ak_public"] = "AAAA" }), "ak_public"},
		{"message missing", mutate(t, func(m, q map[string]any) { delete(q, "message") }), "message"},
		{"message bad magic", mutate(t, func(m, q map[string]any) {
			q["message"] = rewrite(t, flip(0))(q["message"].(string))
		}), "magic"},
		{"message not a quote", mutate(t, func(m, q map[string]any) {
			// TPM_ST_ATTEST_CERTIFY instead of TPM_ST_ATTEST_QUOTE.
			q["message"] = rewrite(t, func(b []byte) []byte { b[5] = 0x17; return b })(q["message"].(string))
		}), "message"},
		{"message truncated", mutate(t, func(m, q map[string]any) {
			q["message"] = rewrite(t, cut(40))(q["message"].(string))
		}), "message"},
		{"signature missing", mutate(t, func(m, q map[string]any) { delete(q, "signature") }), "signature"},
		{"signature truncated", mutate(t, func(m, q map[string]any) {
			q["signature"] = rewrite(t, cut(100))(q["signature"].(string))
		}), "signature"},
		{"signature ECDSA", mutate(t, func(m, q map[string]any) {
			q["signature"] = rewrite(t, func(b []byte) []byte { b[1] = 0x18; return b })(q["signature"].(string))
		}), "signature"},
		{"signature unknown scheme", mutate(t, func(m, q map[string]any) {
			q["signature"] = rewrite(t, func(b []byte) []byte { b[0], b[1] = 0x77, 0x77; return b })(q["signature"].(string))
		}), "signature"},
		{"23 PCRs", mutate(t, func(m, q map[string]any) { q["pcrs"] = q["pcrs"].([]any)[:23] }), "pcrs"},
		{"no PCRs", mutate(t, func(m, q map[string]any) { delete(q, "pcrs") }), "pcrs"},
		{"PCR not hex", mutate(t, func(m, q map[string]any) { q["pcrs"].([]any)[3] = strings.Repeat("zz", 32) }), "PCR 3"},
		{"PCR SHA-1 size", mutate(t, func(m, q map[string]any) { q["pcrs"].([]any)[5] = strings.Repeat("00", 20) }), "PCR 5"},
		{"PCR not a string", mutate(t, func(m, q map[string]any) { q["pcrs"].([]any)[0] = 7 }), "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tpm.ParseEvidence(tc.in)
			if err == nil {
				t.Fatalf("ParseEvidence = %+v, want an error", p)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

// FuzzParseEvidence: no input panics ParseEvidence. `go test` runs the
// seeds; `go test -fuzz FuzzParseEvidence` explores further.
func FuzzParseEvidence(f *testing.F) {
	f.Add(upstreamEvidence(f))
	f.Add([]byte(`{"ak_public":"","tpm_quote":{"message":"/1RDR4AYAAAAAA==","signature":"ABQACwAA","pcrs":[]}}`))
	f.Add([]byte(`{"tpm_quote":{"message":"/1RDR4AY","signature":"ABQ="}}`))
	var m map[string]any
	if err := json.Unmarshal(upstreamEvidence(f), &m); err != nil {
		f.Fatal(err)
	}
	q := m["tpm_quote"].(map[string]any)
	msg, _ := base64.StdEncoding.DecodeString(q["message"].(string))
	sig, _ := base64.StdEncoding.DecodeString(q["signature"].(string))
	orig := map[string][]byte{"message": msg, "signature": sig}
	// ParseEvidence recovers from panics in go-tpm's decoder as a safety net;
	// the fuzz test still reports them.
	check := func(t *testing.T, ev []byte) {
		if _, err := tpm.ParseEvidence(ev); err != nil && strings.Contains(err.Error(), "malformed input (") {
			t.Errorf("go-tpm's decoder panicked: %v", err)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		check(t, in)
		// Also feed the bytes as the TPM structures inside valid JSON, where
		// go-tpm's decoder sees them.
		for _, field := range []string{"message", "signature"} {
			b := append(bytes.Clone(in), orig[field][min(len(in), 8):]...)
			q[field] = base64.StdEncoding.EncodeToString(b)
			ev, _ := json.Marshal(m)
			check(t, ev)
			q[field] = base64.StdEncoding.EncodeToString(orig[field])
		}
	})
}

// TestQuoteVerifiesWithGoTPMTools checks the evidence with an independent
// implementation: go-tpm-tools' quote.Verify.
func TestQuoteVerifiesWithGoTPMTools(t *testing.T) {
	sw := swtpm.Start(t)
	a := open(t, tpm.Options{Device: sw.Device()})
	rd := sha512.Sum384([]byte("go-tpm-tools"))
	ev, err := a.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	var w tpm.Evidence
	if err := json.Unmarshal(ev, &w); err != nil {
		t.Fatal(err)
	}
	msg, _ := base64.StdEncoding.DecodeString(w.Quote.Message)
	sig, _ := base64.StdEncoding.DecodeString(w.Quote.Signature)
	p, err := tpm.ParseEvidence(ev)
	if err != nil {
		t.Fatalf("ParseEvidence: %v", err)
	}
	q := &pb.Quote{Quote: msg, RawSig: sig, Pcrs: &pb.PCRs{Hash: pb.HashAlgo_SHA256, Pcrs: map[uint32][]byte{}}}
	for i, v := range p.PCRs {
		q.Pcrs.Pcrs[uint32(i)] = v
	}
	if err := tpmquote.Verify(q, a.AKPublic(), rd[:32]); err != nil {
		t.Fatalf("go-tpm-tools quote.Verify: %v", err)
	}
	if err := tpmquote.Verify(q, a.AKPublic(), rd[:]); err == nil {
		t.Fatalf("go-tpm-tools quote.Verify accepted the untruncated 48-byte nonce")
	}
}
