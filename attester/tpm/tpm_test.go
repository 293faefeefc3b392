package tpm_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/conformance"
	"github.com/guestd/guestd/attester/tpm"
	verifier "github.com/guestd/guestd/test/kbs/verifier/tpm"
	"github.com/guestd/guestd/test/swtpm"
)

func open(t *testing.T, opts tpm.Options) *tpm.Attester {
	t.Helper()
	a, err := tpm.Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

func verifyFunc(t *testing.T, a *tpm.Attester) conformance.VerifyFunc {
	t.Helper()
	v, err := verifier.New(verifier.Options{TrustedAKs: []crypto.PublicKey{a.AKPublic()}})
	if err != nil {
		t.Fatalf("verifier.New: %v", err)
	}
	return func(ev json.RawMessage, rd []byte) error {
		_, err := v.Verify(context.Background(), ev, rd)
		return err
	}
}

// rawTPM opens a raw channel to sw; the attester on it must be closed.
func rawTPM(t *testing.T, sw *swtpm.TPM) transport.TPMCloser {
	t.Helper()
	c, err := tpm.OpenTransport(context.Background(), sw.Device())
	if err != nil {
		t.Fatalf("OpenTransport: %v", err)
	}
	return c
}

// handles lists the TPM's handles of one type (persistent: 0x81, transient:
// 0x80).
func handles(t *testing.T, c transport.TPM, kind byte) []tpm2.TPMHandle {
	t.Helper()
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapHandles, Property: uint32(kind) << 24, PropertyCount: math.MaxUint16}.Execute(c)
	if err != nil {
		t.Fatalf("GetCapability(handles %#x): %v", kind, err)
	}
	hs, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		t.Fatalf("GetCapability(handles %#x): %v", kind, err)
	}
	return hs.Handle
}

// publicAt returns the DER public key persisted at h.
func publicAt(t *testing.T, c transport.TPM, h uint32) []byte {
	t.Helper()
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(h)}.Execute(c)
	if err != nil {
		t.Fatalf("ReadPublic(%#x): %v", h, err)
	}
	pub, err := rp.OutPublic.Contents()
	if err != nil {
		t.Fatalf("decode public at %#x: %v", h, err)
	}
	detail, _ := pub.Parameters.RSADetail()
	n, _ := pub.Unique.RSA()
	if detail == nil || n == nil {
		t.Fatalf("key at %#x is not RSA", h)
	}
	k, _ := tpm2.RSAPub(detail, n)
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		t.Fatalf("encode key at %#x: %v", h, err)
	}
	return der
}

func TestConformance(t *testing.T) {
	sw := swtpm.Start(t)
	a := open(t, tpm.Options{Device: sw.Device()})
	if a.Tee() != "tpm" {
		t.Fatalf("Tee() = %q", a.Tee())
	}
	conformance.Check(t, a, verifyFunc(t, a))
}

// TestEvidenceWireFormat checks every encoding trustee's verifier relies on.
func TestEvidenceWireFormat(t *testing.T) {
	sw := swtpm.Start(t)
	a := open(t, tpm.Options{Device: sw.Device()})
	rd := sha512.Sum384([]byte("wire format"))
	ev, err := a.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}

	var top map[string]json.RawMessage
	if err := json.Unmarshal(ev, &top); err != nil {
		t.Fatalf("evidence JSON: %v", err)
	}
	if len(top) != 2 || top["ak_public"] == nil || top["tpm_quote"] == nil {
		t.Fatalf("top-level keys: %s, want exactly ak_public and tpm_quote", ev)
	}
	var q map[string]json.RawMessage
	if err := json.Unmarshal(top["tpm_quote"], &q); err != nil {
		t.Fatalf("tpm_quote JSON: %v", err)
	}
	if len(q) != 3 || q["message"] == nil || q["signature"] == nil || q["pcrs"] == nil {
		t.Fatalf("tpm_quote keys: %s, want exactly message, signature, pcrs", top["tpm_quote"])
	}

	var w tpm.Evidence
	if err := json.Unmarshal(ev, &w); err != nil {
		t.Fatalf("evidence JSON: %v", err)
	}
	// ak_public: standard base64 of the DER SubjectPublicKeyInfo of an RSA key.
	der, err := base64.StdEncoding.DecodeString(w.AKPublic)
	if err != nil {
		t.Fatalf("ak_public is not standard base64: %v", err)
	}
	if !bytes.Equal(der, a.AKPublicDER()) {
		t.Fatalf("ak_public differs from AKPublicDER()")
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		t.Fatalf("ak_public is not DER SubjectPublicKeyInfo: %v", err)
	}
	if rk, ok := k.(*rsa.PublicKey); !ok || rk.N.BitLen() != 2048 || !rk.Equal(a.AKPublic()) {
		t.Fatalf("ak_public is %T, want the attester's RSA-2048 AK", k)
	}
	if b, _ := pem.Decode(a.AKPublicPEM()); b == nil || b.Type != "PUBLIC KEY" || !bytes.Equal(b.Bytes, der) {
		t.Fatalf("AKPublicPEM() is not a PUBLIC KEY block of the AK")
	}

	// message: standard base64 of TPMS_ATTEST with no TPM2B size prefix:
	// TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE, then qualifiedSigner and
	// the 32-byte extraData.
	msg, err := base64.StdEncoding.DecodeString(w.Quote.Message)
	if err != nil {
		t.Fatalf("message is not standard base64: %v", err)
	}
	if !bytes.HasPrefix(msg, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}) {
		t.Fatalf("message starts %x, want TPMS_ATTEST magic ff544347 and type 8018", msg[:min(6, len(msg))])
	}
	att, err := tpm2.Unmarshal[tpm2.TPMSAttest](msg)
	if err != nil {
		t.Fatalf("message is not TPMS_ATTEST: %v", err)
	}
	if !bytes.Equal(att.ExtraData.Buffer, rd[:32]) {
		t.Fatalf("extraData = %x, want the first 32 bytes of the report data %x", att.ExtraData.Buffer, rd[:32])
	}

	// signature: standard base64 of TPMT_SIGNATURE, RSASSA (0x0014) with
	// SHA-256 (0x000b) and a 256-byte signature.
	sig, err := base64.StdEncoding.DecodeString(w.Quote.Signature)
	if err != nil {
		t.Fatalf("signature is not standard base64: %v", err)
	}
	if len(sig) != 2+2+2+256 || !bytes.HasPrefix(sig, []byte{0x00, 0x14, 0x00, 0x0b, 0x01, 0x00}) {
		t.Fatalf("signature is %d bytes starting %x, want 262 starting 0014000b0100", len(sig), sig[:min(6, len(sig))])
	}

	// pcrs: 24 lowercase hex SHA-256 values.
	lowerHex := regexp.MustCompile(`^[0-9a-f]{64}$`)
	if len(w.Quote.PCRs) != 24 {
		t.Fatalf("%d pcrs, want 24", len(w.Quote.PCRs))
	}
	for i, p := range w.Quote.PCRs {
		if !lowerHex.MatchString(p) {
			t.Fatalf("pcrs[%d] = %q, want 64 lowercase hex digits", i, p)
		}
	}
}

// TestPCRValuesAreTheTPMs extends PCR 8 as upstream binds init-data and
// checks that the evidence reports it, as trustee's init_data claim reads it.
func TestPCRValuesAreTheTPMs(t *testing.T) {
	sw := swtpm.Start(t)
	initData := sha256.Sum256([]byte("init-data"))
	c := rawTPM(t, sw)
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(8), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{{HashAlg: tpm2.TPMAlgSHA256, Digest: initData[:]}}},
	}.Execute(c)
	c.Close()
	if err != nil {
		t.Fatalf("PCRExtend(8): %v", err)
	}

	a := open(t, tpm.Options{Device: sw.Device()})
	rd := []byte("short report data")
	ev, err := a.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	v, err := verifier.New(verifier.Options{TrustedAKs: []crypto.PublicKey{a.AKPublic()}})
	if err != nil {
		t.Fatalf("verifier.New: %v", err)
	}
	claims, err := v.Verify(context.Background(), ev, rd)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	want := sha256.Sum256(append(make([]byte, 32), initData[:]...))
	if claims["init_data"] != hex.EncodeToString(want[:]) || claims["pcr08"] != claims["init_data"] {
		t.Fatalf("init_data = %v, pcr08 = %v, want %x", claims["init_data"], claims["pcr08"], want)
	}
	if claims["pcr07"] != strings.Repeat("00", 32) {
		t.Fatalf("pcr07 = %v, want zero (never extended)", claims["pcr07"])
	}
	// Short report data is zero-padded to 32 bytes.
	padded, _ := attester.Regularize(rd, 32, true)
	if claims["report_data"] != hex.EncodeToString(padded) {
		t.Fatalf("report_data = %v, want %x", claims["report_data"], padded)
	}
}

// TestAKPersistedAndReused: the first Open creates and persists the AK; an
// Open after an swtpm restart on the same state finds and uses it.
func TestAKPersistedAndReused(t *testing.T) {
	sw := swtpm.Start(t)
	c := rawTPM(t, sw)
	if hs := handles(t, c, 0x81); len(hs) != 0 {
		t.Fatalf("fresh swtpm has persistent handles %v", hs)
	}
	c.Close()

	a1, err := tpm.Open(context.Background(), tpm.Options{Device: sw.Device()})
	if err != nil {
		t.Fatalf("first Open: %v", err)
	}
	der1 := a1.AKPublicDER()
	if err := a1.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	c = rawTPM(t, sw)
	hs := handles(t, c, 0x81)
	if len(hs) != 1 || uint32(hs[0]) != tpm.DefaultAKHandle {
		t.Fatalf("persistent handles after Open = %v, want [%#x]", hs, tpm.DefaultAKHandle)
	}
	if !bytes.Equal(publicAt(t, c, tpm.DefaultAKHandle), der1) {
		t.Fatalf("key persisted at %#x is not the attester's AK", tpm.DefaultAKHandle)
	}
	if ts := handles(t, c, 0x80); len(ts) != 0 {
		t.Fatalf("Open/Close leaked transient handles %v", ts)
	}
	c.Close()

	if err := sw.Stop(); err != nil {
		t.Fatalf("stop swtpm: %v", err)
	}
	sw2 := swtpm.StartState(t, sw.StateDir)
	a2 := open(t, tpm.Options{Device: sw2.Device()})
	if !bytes.Equal(a2.AKPublicDER(), der1) {
		t.Fatalf("AK after restart differs from the persisted one")
	}
	// Evidence from the second attester verifies against the first AK.
	v, err := verifier.New(verifier.Options{TrustedAKsPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der1})})
	if err != nil {
		t.Fatalf("verifier.New: %v", err)
	}
	rd := sha512.Sum384([]byte("reuse"))
	ev, err := a2.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	if _, err := v.Verify(context.Background(), ev, rd[:]); err != nil {
		t.Fatalf("Verify with the persisted AK: %v", err)
	}
}

// TestProvisionedAKIsUsed: a key someone else persisted at the handle is the
// AK, not a key the attester derives itself.
func TestProvisionedAKIsUsed(t *testing.T) {
	sw := swtpm.Start(t)
	const handle = 0x81010005
	c := rawTPM(t, sw)
	// Provision an AK in the endorsement hierarchy, as tpm2_createak does
	// (the attester would derive its own in the owner hierarchy).
	tmpl := akTemplate()
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(tmpl),
	}.Execute(c)
	if err != nil {
		t.Fatalf("CreatePrimary: %v", err)
	}
	persist(t, c, cp.ObjectHandle, cp.Name, handle)
	provisioned := publicAt(t, c, handle)
	c.Close()

	a := open(t, tpm.Options{Device: sw.Device(), AKHandle: handle})
	if !bytes.Equal(a.AKPublicDER(), provisioned) {
		t.Fatalf("attester AK is not the key provisioned at %#x", handle)
	}
	conformance.Check(t, a, verifyFunc(t, a))
	a.Close()

	c = rawTPM(t, sw)
	defer c.Close()
	if hs := handles(t, c, 0x81); len(hs) != 1 || hs[0] != handle {
		t.Fatalf("persistent handles = %v, want only the provisioned %#x", hs, handle)
	}
}

// TestUnsuitableKeyAtHandle: a non-signing key at the AK handle is an error,
// and the key is left in place.
func TestUnsuitableKeyAtHandle(t *testing.T) {
	for _, tc := range []struct {
		name string
		tmpl func() tpm2.TPMTPublic
		want string
	}{
		{"storage key", func() tpm2.TPMTPublic { return tpm2.RSASRKTemplate }, "not a restricted signing key"},
		{"ECC AK", func() tpm2.TPMTPublic {
			p := tpm2.ECCSRKTemplate
			p.ObjectAttributes.Decrypt = false
			p.ObjectAttributes.SignEncrypt = true
			p.Parameters = tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
				Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
				Scheme: tpm2.TPMTECCScheme{
					Scheme:  tpm2.TPMAlgECDSA,
					Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
				},
				CurveID: tpm2.TPMECCNistP256,
			})
			return p
		}, "not RSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sw := swtpm.Start(t)
			c := rawTPM(t, sw)
			cp, err := tpm2.CreatePrimary{
				PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
				InPublic:      tpm2.New2B(tc.tmpl()),
			}.Execute(c)
			if err != nil {
				t.Fatalf("CreatePrimary: %v", err)
			}
			persist(t, c, cp.ObjectHandle, cp.Name, tpm.DefaultAKHandle)
			c.Close()

			_, err = tpm.Open(context.Background(), tpm.Options{Device: sw.Device()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, want an error containing %q", err, tc.want)
			}
			c = rawTPM(t, sw)
			defer c.Close()
			if hs := handles(t, c, 0x81); len(hs) != 1 || uint32(hs[0]) != tpm.DefaultAKHandle {
				t.Fatalf("persistent handles = %v, want the foreign key kept at %#x", hs, tpm.DefaultAKHandle)
			}
			if ts := handles(t, c, 0x80); len(ts) != 0 {
				t.Fatalf("failed Open leaked transient handles %v", ts)
			}
		})
	}
}

// TestAKHandles: a handle outside the persistent range is refused; one the
// owner cannot persist to (platform range) gets a transient AK that Close
// flushes.
func TestAKHandles(t *testing.T) {
	sw := swtpm.Start(t)
	if _, err := tpm.Open(context.Background(), tpm.Options{Device: sw.Device(), AKHandle: 0x80000001}); err == nil || !strings.Contains(err.Error(), "not a persistent handle") {
		t.Fatalf("Open with a transient handle = %v, want a not-persistent error", err)
	}

	a, err := tpm.Open(context.Background(), tpm.Options{Device: sw.Device(), AKHandle: 0x81800001})
	if err != nil {
		t.Fatalf("Open with a platform handle: %v", err)
	}
	verify := verifyFunc(t, a)
	rd := sha512.Sum384([]byte("transient"))
	ev, err := a.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence: %v", err)
	}
	if err := verify(ev, rd[:]); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := a.Evidence(context.Background(), rd[:]); err == nil {
		t.Fatalf("Evidence after Close succeeded")
	}
	c := rawTPM(t, sw)
	defer c.Close()
	if hs := handles(t, c, 0x81); len(hs) != 0 {
		t.Fatalf("persistent handles = %v, want none", hs)
	}
	if ts := handles(t, c, 0x80); len(ts) != 0 {
		t.Fatalf("Close left transient handles %v", ts)
	}
}

// TestContextInterruptsStuckTPM: a TPM that never answers does not hang Open
// or Evidence past the caller's deadline.
func TestContextInterruptsStuckTPM(t *testing.T) {
	dir, err := os.MkdirTemp("", "stucktpm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "tpm.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
		io.Copy(io.Discard, c) // read commands, never answer
	}()
	t.Cleanup(func() {
		l.Close()
		if c, ok := <-accepted; ok {
			c.Close()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tpm.Open(ctx, tpm.Options{Device: "unix:" + sock})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open on a silent TPM = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Open took %v after a 200ms deadline", d)
	}
}

// TestEvidenceAfterCancelStillWorks: a cancelled call leaves the attester
// usable.
func TestEvidenceAfterCancelStillWorks(t *testing.T) {
	sw := swtpm.Start(t)
	a := open(t, tpm.Options{Device: sw.Device()})
	verify := verifyFunc(t, a)
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		// Cancel at varying points of the exchange.
		time.AfterFunc(time.Duration(i)*200*time.Microsecond, cancel)
		rd := []byte{byte(i)}
		ev, err := a.Evidence(ctx, rd)
		cancel()
		switch {
		case err == nil:
			if err := verify(ev, rd); err != nil {
				t.Fatalf("call %d: evidence that survived a late cancel does not verify: %v", i, err)
			}
		case !errors.Is(err, context.Canceled):
			t.Fatalf("call %d: error %v does not wrap context.Canceled", i, err)
		}
	}
	rd := sha512.Sum384([]byte("after cancel"))
	ev, err := a.Evidence(context.Background(), rd[:])
	if err != nil {
		t.Fatalf("Evidence after cancelled calls: %v", err)
	}
	if err := verify(ev, rd[:]); err != nil {
		t.Fatalf("Verify after cancelled calls: %v", err)
	}
}

func TestParseAKHandle(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    uint32
		wantErr bool
	}{
		{"0x81010002", 0x81010002, false},
		{"81010002", 0x81010002, false},
		{"0X81000001", 0x81000001, false},
		{" 0x81010003 ", 0x81010003, false},
		{"", 0, true},
		{"0x", 0, true},
		{"0x1ffffffff", 0, true},
		{"handle", 0, true},
	} {
		got, err := tpm.ParseAKHandle(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseAKHandle(%q) = %#x, %v; want %#x, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestOpenMissingDevice(t *testing.T) {
	dir := t.TempDir()
	for _, dev := range []string{filepath.Join(dir, "tpm0"), "unix:" + filepath.Join(dir, "none.sock")} {
		if _, err := tpm.Open(context.Background(), tpm.Options{Device: dev}); err == nil {
			t.Errorf("Open(%q) succeeded", dev)
		}
	}
}

// akTemplate is an RSA restricted signing key with RSASSA-SHA256, the AK
// shape tpm2_createak makes by default.
func akTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true,
			UserWithAuth: true, Restricted: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, 256)}),
	}
}

// persist makes the transient object h persistent at handle and flushes h.
func persist(t *testing.T, c transport.TPM, h tpm2.TPMHandle, name tpm2.TPM2BName, handle uint32) {
	t.Helper()
	_, err := tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: name},
		PersistentHandle: tpm2.TPMHandle(handle),
	}.Execute(c)
	if err != nil {
		t.Fatalf("EvictControl(%#x): %v", handle, err)
	}
	if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(c); err != nil {
		t.Fatalf("FlushContext: %v", err)
	}
}
