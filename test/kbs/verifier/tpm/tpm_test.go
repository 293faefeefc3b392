package tpm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	tpmattester "github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/test/swtpm"
)

// fixture is a real swtpm attester's evidence for rd, and the AK.
type fixture struct {
	ev json.RawMessage
	rd []byte
	ak crypto.PublicKey
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	sw := swtpm.Start(t)
	a, err := tpmattester.Open(context.Background(), tpmattester.Options{Device: sw.Device()})
	if err != nil {
		t.Fatalf("open attester: %v", err)
	}
	t.Cleanup(func() { a.Close() })
	rd := sha512.Sum384([]byte("verifier test"))
	ev, err := a.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	return fixture{ev: ev, rd: rd[:], ak: a.AKPublic()}
}

func mustNew(t *testing.T, keys ...crypto.PublicKey) *Verifier {
	t.Helper()
	v, err := New(Options{TrustedAKs: keys})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// edit decodes evidence, applies f and re-encodes it.
func edit(t *testing.T, ev json.RawMessage, f func(*tpmattester.Evidence)) json.RawMessage {
	t.Helper()
	var w tpmattester.Evidence
	if err := json.Unmarshal(ev, &w); err != nil {
		t.Fatal(err)
	}
	f(&w)
	out, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// flipB64 flips the byte at index i (negative counts from the end) of a
// standard base64 string.
func flipB64(t *testing.T, s string, i int) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	if i < 0 {
		i += len(b)
	}
	b[i] ^= 0x01
	return base64.StdEncoding.EncodeToString(b)
}

func otherRSAKey(t *testing.T) *rsa.PublicKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return &k.PublicKey
}

func TestVerifyClaims(t *testing.T) {
	f := newFixture(t)
	claims, err := mustNew(t, f.ak).Verify(context.Background(), f.ev, f.rd)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if len(claims) != 3+24 {
		t.Fatalf("%d claims, want report_data, init_data, ak_public and 24 PCRs: %v", len(claims), claims)
	}
	if claims["report_data"] != hex.EncodeToString(f.rd[:32]) {
		t.Fatalf("report_data = %v, want %x", claims["report_data"], f.rd[:32])
	}
	var w tpmattester.Evidence
	if err := json.Unmarshal(f.ev, &w); err != nil {
		t.Fatal(err)
	}
	if claims["ak_public"] != w.AKPublic {
		t.Fatalf("ak_public = %v, want the evidence's %s", claims["ak_public"], w.AKPublic)
	}
	for i, p := range w.Quote.PCRs {
		if got := claims[fmt.Sprintf("pcr%02d", i)]; got != p {
			t.Fatalf("pcr%02d = %v, want %s", i, got, p)
		}
	}
	if claims["init_data"] != w.Quote.PCRs[8] {
		t.Fatalf("init_data = %v, want PCR 8 %s", claims["init_data"], w.Quote.PCRs[8])
	}
}

func TestVerifyRejects(t *testing.T) {
	f := newFixture(t)
	other := otherRSAKey(t)
	otherDER, _ := x509.MarshalPKIXPublicKey(other)
	wrongRD := sha512.Sum384([]byte("another nonce"))
	for _, tc := range []struct {
		name  string
		trust []crypto.PublicKey
		ev    json.RawMessage
		rd    []byte
		want  error
	}{
		{"untrusted AK", []crypto.PublicKey{other}, f.ev, f.rd, ErrAKNotTrusted},
		{"flipped message byte in extraData", nil, edit(t, f.ev, func(w *tpmattester.Evidence) {
			// magic, type, qualifiedSigner (2+34), extraData size (2): 44.
			w.Quote.Message = flipB64(t, w.Quote.Message, 44)
		}), f.rd, ErrQuoteSignature},
		{"flipped last message byte", nil, edit(t, f.ev, func(w *tpmattester.Evidence) {
			w.Quote.Message = flipB64(t, w.Quote.Message, -1)
		}), f.rd, ErrQuoteSignature},
		{"flipped signature byte", nil, edit(t, f.ev, func(w *tpmattester.Evidence) {
			w.Quote.Signature = flipB64(t, w.Quote.Signature, -1)
		}), f.rd, ErrQuoteSignature},
		{"another trusted AK in ak_public", []crypto.PublicKey{f.ak, other}, edit(t, f.ev, func(w *tpmattester.Evidence) {
			w.AKPublic = base64.StdEncoding.EncodeToString(otherDER)
		}), f.rd, ErrQuoteSignature},
		{"wrong report data", nil, f.ev, wrongRD[:], ErrNonceMismatch},
		{"report data differing in byte 31", nil, f.ev, func() []byte {
			rd := append([]byte(nil), f.rd...)
			rd[31] ^= 1
			return rd
		}(), ErrNonceMismatch},
		{"tampered PCR value", nil, edit(t, f.ev, func(w *tpmattester.Evidence) {
			w.Quote.PCRs[10] = strings.Repeat("ab", 32)
		}), f.rd, ErrPCRDigestMismatch},
		{"swapped PCR values", nil, edit(t, f.ev, func(w *tpmattester.Evidence) {
			// On a fresh TPM PCR 0 is zero and PCR 17 (a locality PCR) all ones.
			if w.Quote.PCRs[0] == w.Quote.PCRs[17] {
				t.Fatalf("PCR 0 and 17 are equal: %s", w.Quote.PCRs[0])
			}
			w.Quote.PCRs[0], w.Quote.PCRs[17] = w.Quote.PCRs[17], w.Quote.PCRs[0]
		}), f.rd, ErrPCRDigestMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trust := tc.trust
			if trust == nil {
				trust = []crypto.PublicKey{f.ak}
			}
			claims, err := mustNew(t, trust...).Verify(context.Background(), tc.ev, tc.rd)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, %v; want error %q", claims, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want.Error()) {
				t.Fatalf("error %q does not name the cause %q", err, tc.want)
			}
		})
	}
}

// TestVerifyTruncatesReportData: as upstream, only the first 32 bytes of the
// report data are bound.
func TestVerifyTruncatesReportData(t *testing.T) {
	f := newFixture(t)
	rd := append([]byte(nil), f.rd...)
	rd[40] ^= 1
	if _, err := mustNew(t, f.ak).Verify(context.Background(), f.ev, rd); err != nil {
		t.Fatalf("Verify with report data differing after byte 32: %v", err)
	}
	if _, err := mustNew(t, f.ak).Verify(context.Background(), f.ev, f.rd[:32]); err != nil {
		t.Fatalf("Verify with the 32-byte prefix: %v", err)
	}
}

func TestVerifyGarbage(t *testing.T) {
	v := mustNew(t, otherRSAKey(t))
	for _, ev := range []string{"", "null", "{}", "[]", `"tpm"`, `{"ak_public":"AAAA","tpm_quote":{}}`,
		`{"ak_public":"` + strings.Repeat("A", 4096) + `","tpm_quote":{"message":"/1RDRw==","signature":"ABQ=","pcrs":[]}}`} {
		if claims, err := v.Verify(context.Background(), json.RawMessage(ev), []byte("rd")); err == nil {
			t.Errorf("Verify(%.40q) = %v, want an error", ev, claims)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := v.Verify(ctx, json.RawMessage(`{}`), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context = %v, want context.Canceled", err)
	}
}

// TestUpstreamEvidence checks evidence the upstream Rust attester produced on
// a TPM (testdata/README.md): its signature and PCR digest verify here. Its
// quote binds 64 bytes of report data (from before upstream moved to 32), so
// today's nonce rule rejects it, as current trustee does.
func TestUpstreamEvidence(t *testing.T) {
	ev, err := os.ReadFile("testdata/trustee_tpm_evidence.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := tpmattester.ParseEvidence(ev)
	if err != nil {
		t.Fatalf("ParseEvidence: %v", err)
	}
	if err := checkSignature(p); err != nil {
		t.Fatalf("signature of upstream evidence: %v", err)
	}
	if err := checkPCRs(p); err != nil {
		t.Fatalf("PCR digest of upstream evidence: %v", err)
	}
	v, err := New(Options{TrustedAKsPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: p.AKPublicDER})})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := v.Verify(context.Background(), ev, p.Nonce[:48]); !errors.Is(err, ErrNonceMismatch) {
		t.Fatalf("Verify(upstream evidence) = %v, want %v (64-byte extraData)", err, ErrNonceMismatch)
	}
	tampered := strings.Replace(string(ev), strings.Repeat("f", 64), strings.Repeat("e", 64), 1)
	if _, err := v.Verify(context.Background(), json.RawMessage(tampered), p.Nonce[:48]); !errors.Is(err, ErrPCRDigestMismatch) {
		t.Fatalf("Verify(upstream evidence, PCR 17 changed) = %v, want %v", err, ErrPCRDigestMismatch)
	}
}

func TestNew(t *testing.T) {
	ak := otherRSAKey(t)
	der, _ := x509.MarshalPKIXPublicKey(ak)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for _, tc := range []struct {
		name    string
		opts    Options
		wantErr bool
	}{
		{"no keys", Options{}, true},
		{"key", Options{TrustedAKs: []crypto.PublicKey{ak}}, false},
		{"PEM", Options{TrustedAKsPEM: pubPEM}, false},
		{"two PEM blocks and a key", Options{TrustedAKsPEM: append(append([]byte{}, pubPEM...), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustDER(t, &ec.PublicKey)})...), TrustedAKs: []crypto.PublicKey{ak}}, false},
		{"not a key", Options{TrustedAKs: []crypto.PublicKey{"key"}}, true},
		{"certificate block", Options{TrustedAKsPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, true},
		{"bad DER", Options{TrustedAKsPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}})}, true},
		{"trailing junk", Options{TrustedAKsPEM: append(append([]byte{}, pubPEM...), "junk"...)}, true},
		{"not PEM", Options{TrustedAKsPEM: []byte("junk")}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("New = %v, wantErr %v", err, tc.wantErr)
			}
		})
	}
}

func mustDER(t *testing.T, k crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
