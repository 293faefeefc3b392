package service_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/sealed"
	"github.com/guestd/guestd/kbc/teekey"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/swtpm"
)

// TestAAOverTheWire calls every AA method with the generated clients of each
// transport, and the data hub's GetResource, UnWrapKey and UnsealSecret on
// the same shared KBS client. One KBS per transport counts the
// attestations: three tokens, N resources, a layer key and a sealed secret
// cost one.
func TestAAOverTheWire(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			e := newKBSEnv(t, "")
			const n = 5
			for i := range n {
				e.put(t, fmt.Sprintf("kbs:///default/key/%d", i), []byte(fmt.Sprintf("key %d", i)))
			}
			// A layer key wrapped under a KEK in the KBS, and a sealed
			// secret whose key and value are in the KBS.
			kek := bytes.Repeat([]byte{0x5a}, 32)
			e.put(t, "kbs:///default/kek/1", kek)
			opts := []byte(`{"symkey":"c2VjcmV0","cipheroptions":{}}`)
			packet, err := (&keyprovider.Wrapper{KEK: kek, KID: "kbs:///default/kek/1"}).Wrap(opts)
			if err != nil {
				t.Fatal(err)
			}
			sealKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			jwk, err := jose.JSONWebKey{Key: &sealKey.PublicKey}.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			e.put(t, "kbs:///default/sealed-key/1", jwk)
			e.put(t, "kbs:///default/secret/1", []byte("vault value"))
			secret, err := sealed.Seal(&sealed.Secret{Version: sealed.Version, Vault: &sealed.Vault{Provider: "kbs", Name: "kbs:///default/secret/1"}},
				sealKey, "kbs:///default/sealed-key/1")
			if err != nil {
				t.Fatal(err)
			}

			aa, err := service.NewAA(service.AAConfig{Attester: sample.New(), KBS: e.client, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			cdh := service.NewCDH(service.CDHConfig{KBC: e.client, Unsealer: &sealed.Unsealer{KBC: e.client}, Logger: testLogger(t)})
			aaSide, cdhSide := tr.serve(t, aa, cdh, service.NewKeyProvider(service.KeyProviderConfig{KBC: e.client}))
			c := aaSide.aa

			// Evidence: the runtime data, raw, is the report data.
			rd := []byte("nonce\x00\xff")
			ev, err := c.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: rd})
			if err != nil {
				t.Fatal(err)
			}
			var se sample.Evidence
			if err := json.Unmarshal(ev.GetEvidence(), &se); err != nil || se.ReportData != base64.StdEncoding.EncodeToString(rd) || se.SVN != "1" {
				t.Fatalf("evidence %s (%v)", ev.GetEvidence(), err)
			}
			_, err = c.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: make([]byte, 65)})
			wantCode(t, "65 bytes of runtime data", err, codes.InvalidArgument, "65 bytes", "at most 64")

			add, err := c.GetAdditionalEvidence(ctx, &aapb.GetAdditionalEvidenceRequest{RuntimeData: rd})
			if err != nil || len(add.GetEvidence()) != 0 {
				t.Fatalf("additional evidence %q, %v", add.GetEvidence(), err)
			}
			tee, err := c.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
			if err != nil || tee.GetTee() != "sample" {
				t.Fatalf("tee %q, %v", tee.GetTee(), err)
			}
			tees, err := c.GetAdditionalTees(ctx, &aapb.GetAdditionalTeesRequest{})
			if err != nil || len(tees.GetAdditionalTees()) != 0 {
				t.Fatalf("additional tees %v, %v", tees.GetAdditionalTees(), err)
			}

			// Two tokens and n resources: one attestation.
			var toks []string
			for range 2 {
				tok, err := c.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"})
				if err != nil {
					t.Fatal(err)
				}
				var obj map[string]string
				if err := json.Unmarshal(tok.GetToken(), &obj); err != nil || len(obj) != 1 || strings.Count(obj["token"], ".") != 2 {
					t.Fatalf("token reply %s (%v): want {\"token\": <JWT>} only", tok.GetToken(), err)
				}
				toks = append(toks, obj["token"])
			}
			if toks[0] != toks[1] {
				t.Error("second GetToken returned another token")
			}
			for i := range n {
				r, err := cdhSide.res.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: fmt.Sprintf("kbs:///default/key/%d", i)})
				if err != nil || string(r.GetResource()) != fmt.Sprintf("key %d", i) {
					t.Fatalf("resource %d: %q, %v", i, r.GetResource(), err)
				}
			}
			out, err := cdhSide.kp.UnWrapKey(ctx, unwrapInput(t, packet, false))
			if err != nil || !bytes.Contains(out.GetKeyProviderKeyWrapProtocolOutput(), []byte(base64.StdEncoding.EncodeToString(opts))) {
				t.Fatalf("UnWrapKey: %s, %v", out.GetKeyProviderKeyWrapProtocolOutput(), err)
			}
			plain, err := cdhSide.sealed.UnsealSecret(ctx, &cdhpb.UnsealSecretInput{Secret: []byte(secret)})
			if err != nil || string(plain.GetPlaintext()) != "vault value" {
				t.Fatalf("UnsealSecret: %q, %v", plain.GetPlaintext(), err)
			}
			if _, err := c.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"}); err != nil {
				t.Fatal(err)
			}
			// n resources, the KEK, the sealing key and the vault secret.
			if s := e.kbs.Server.Stats(); s.Attest != 1 || s.ResourceGets != n+3 {
				t.Errorf("KBS stats %+v: want 1 attestation and %d resources", s, n+3)
			}
			if s := e.client.Stats(); s.Attestations != 1 {
				t.Errorf("client stats %+v", s)
			}

			// Token types.
			_, err = c.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "coco_as"})
			wantCode(t, "coco_as token", err, codes.Unimplemented, "coco_as", "not supported")
			_, err = c.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "oidc"})
			wantCode(t, "unknown token type", err, codes.InvalidArgument, "oidc")

			// No event log; sample cannot bind init-data.
			m, err := c.ExtendRuntimeMeasurement(ctx, &aapb.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c"})
			if err != nil || m.GetResult() != aapb.RuntimeMeasurementResult_NOT_ENABLED {
				t.Fatalf("extend without a log: %v, %v", m.GetResult(), err)
			}
			digest := sha256.Sum256([]byte("initdata"))
			if _, err := c.BindInitData(ctx, &aapb.BindInitDataRequest{Digest: digest[:]}); err != nil {
				t.Fatalf("BindInitData on sample: %v", err)
			}
			_, err = c.BindInitData(ctx, &aapb.BindInitDataRequest{})
			wantCode(t, "empty digest", err, codes.InvalidArgument, "empty")

			// Each socket serves its own services only.
			_, err = aaSide.res.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
			wantServerCode(t, "GetResource on the AA socket", err, codes.Unimplemented)
			_, err = cdhSide.aa.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
			wantServerCode(t, "GetTeeType on the CDH socket", err, codes.Unimplemented)
		})
	}
}

// TestGetTokenWithoutKBS: no KBS configured.
func TestGetTokenWithoutKBS(t *testing.T) {
	aa, err := service.NewAA(service.AAConfig{Attester: sample.New()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = aa.GetToken(context.Background(), &aapb.GetTokenRequest{TokenType: "kbs"})
	wantCode(t, "GetToken without KBS", err, codes.FailedPrecondition, "no KBS")
	if _, err := service.NewAA(service.AAConfig{}); err == nil {
		t.Error("NewAA without an attester succeeded")
	}
}

// TestExposeTEEKey: the legacy token answer carries the PEM of the very key
// the token binds (the KBS put its public half in the token), for each key
// algorithm; without ExposeTEEKey, and always over REST, there is no key.
func TestExposeTEEKey(t *testing.T) {
	for _, tc := range []struct {
		alg     teekey.Algorithm
		pemType string
	}{
		{teekey.ECP256, "PRIVATE KEY"},
		{teekey.ECP521, "PRIVATE KEY"},
		{teekey.RSAOAEP256, "RSA PRIVATE KEY"},
	} {
		t.Run(string(tc.alg), func(t *testing.T) {
			ctx := ctxT(t)
			e := newKBSEnv(t, tc.alg)
			aa, err := service.NewAA(service.AAConfig{Attester: sample.New(), KBS: e.client, ExposeTEEKey: true, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			aaSide, _ := serveTTRPC(t, aa, nil, nil)
			var first []byte
			for range 2 {
				resp, err := aaSide.aa.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"})
				if err != nil {
					t.Fatal(err)
				}
				var obj struct {
					Token      string `json:"token"`
					TeeKeypair string `json:"tee_keypair"`
				}
				if err := json.Unmarshal(resp.GetToken(), &obj); err != nil {
					t.Fatal(err)
				}
				block, rest := pem.Decode([]byte(obj.TeeKeypair))
				if block == nil || block.Type != tc.pemType || len(bytes.TrimSpace(rest)) != 0 {
					t.Fatalf("tee_keypair is not one %q PEM block: %q", tc.pemType, obj.TeeKeypair)
				}
				var pub crypto.PublicKey
				if block.Type == "RSA PRIVATE KEY" {
					k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
					if err != nil {
						t.Fatal(err)
					}
					pub = k.Public()
				} else {
					k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
					if err != nil {
						t.Fatal(err)
					}
					pub = k.(crypto.Signer).Public()
				}
				bound := tokenTEEKey(t, obj.Token)
				if !pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(bound) {
					t.Fatal("tee_keypair is not the key the token binds")
				}
				if first != nil && !bytes.Equal(first, block.Bytes) {
					t.Fatal("the second token came with another key")
				}
				first = block.Bytes
			}
			if s := e.kbs.Server.Stats(); s.Attest != 1 {
				t.Errorf("KBS attested %d times", s.Attest)
			}
			// REST never hands the key out.
			tok, err := service.RESTAttestation(aa).Token(ctx, "kbs")
			if err != nil || bytes.Contains(tok, []byte("tee_keypair")) || bytes.Contains(tok, []byte("PRIVATE")) {
				t.Fatalf("REST token %s, %v", tok, err)
			}
		})
	}
}

// tokenTEEKey returns the TEE public key in a token's claims, where the
// KBS looks it up.
func tokenTEEKey(t *testing.T, token string) crypto.PublicKey {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var cur any
	if err := json.Unmarshal(payload, &cur); err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Split(testkbs.TeePubKeyPath[1:], "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			t.Fatalf("token claims lack %s", testkbs.TeePubKeyPath)
		}
		cur = m[k]
	}
	raw, _ := json.Marshal(cur)
	var jwk protocol.TeePubKey
	if err := json.Unmarshal(raw, &jwk); err != nil {
		t.Fatal(err)
	}
	pub, err := teekey.ParsePublic(jwk)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// openPCRs connects to a fresh swtpm.
func openPCRs(t *testing.T) tpm.PCRBank {
	t.Helper()
	sw := swtpm.Start(t)
	c, err := tpm.OpenTransport(context.Background(), sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return tpm.PCRBank{TPM: c}
}

// openLog opens an AAEL over a swtpm's PCRs with initial PCR 16 (PCR 17,
// upstream's default, is a DRTM PCR that locality 0 cannot extend).
func openLog(t *testing.T, bank tpm.PCRBank) *eventlog.Log {
	t.Helper()
	l, err := eventlog.Open(context.Background(), filepath.Join(t.TempDir(), "eventlog"),
		eventlog.Options{Extender: eventlog.TPMExtender{PCRs: bank}, InitPCR: 16})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// taggedEventDigest is SHA-256 of the AAEL tagged event of text.
func taggedEventDigest(text string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x4141454c)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(text)))
	d := sha256.Sum256(append(b, text...))
	return d[:]
}

// TestExtendRuntimeMeasurement records events over every transport into
// an AAEL over a real swtpm and checks the PCRs and the log.
func TestExtendRuntimeMeasurement(t *testing.T) {
	ctx := ctxT(t)
	bank := openPCRs(t)
	log := openLog(t, bank)
	aa, err := service.NewAA(service.AAConfig{Attester: sample.New(), Eventlog: log, EventlogEnabled: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var want []eventlog.Entry
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			aaSide, _ := tr.serve(t, aa, nil, nil)
			for _, reg := range []*uint64{nil, proto.Uint64(23)} {
				pcr := uint64(16)
				if reg != nil {
					pcr = *reg
				}
				old, err := bank.ReadPCR(ctx, int(pcr))
				if err != nil {
					t.Fatal(err)
				}
				content := fmt.Sprintf(`{"transport":%q, "pcr":%d}`, tr.name, pcr)
				resp, err := aaSide.aa.ExtendRuntimeMeasurement(ctx, &aapb.ExtendRuntimeMeasurementRequest{
					Domain: "github.com/guestd", Operation: "test-event", Content: content, RegisterIndex: reg})
				if err != nil || resp.GetResult() != aapb.RuntimeMeasurementResult_OK {
					t.Fatalf("extend PCR %d: %v, %v", pcr, resp.GetResult(), err)
				}
				now, err := bank.ReadPCR(ctx, int(pcr))
				if err != nil {
					t.Fatal(err)
				}
				d := taggedEventDigest("github.com/guestd test-event " + content)
				if exp := sha256.Sum256(append(bytes.Clone(old), d...)); !bytes.Equal(now, exp[:]) {
					t.Errorf("PCR %d = %x, want SHA-256(%x ‖ %x)", pcr, now, old, d)
				}
				want = append(want, eventlog.Entry{Register: uint32(pcr), Algorithm: eventlog.SHA256, Digest: d,
					Domain: "github.com/guestd", Operation: "test-event", Content: content})
			}
			for _, bad := range []*aapb.ExtendRuntimeMeasurementRequest{
				{Domain: "d", Operation: "o", Content: "two\nlines"},
				{Domain: "a domain", Operation: "o", Content: "c"},
				{Domain: "d", Operation: "", Content: "c"},
			} {
				_, err := aaSide.aa.ExtendRuntimeMeasurement(ctx, bad)
				wantCode(t, fmt.Sprintf("extend %q %q %q", bad.Domain, bad.Operation, bad.Content), err, codes.InvalidArgument)
			}
		})
	}
	got, err := eventlog.ReadFile(log.Path())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.EqualFunc(got, want, func(a, b eventlog.Entry) bool {
		return a.Register == b.Register && a.Algorithm == b.Algorithm && bytes.Equal(a.Digest, b.Digest) &&
			a.Domain == b.Domain && a.Operation == b.Operation && a.Content == b.Content
	}) {
		t.Errorf("log entries\n%+v\nwant\n%+v", got, want)
	}

	// NOT_SUPPORTED: enabled in the configuration, nothing to extend.
	unsupported, err := service.NewAA(service.AAConfig{Attester: sample.New(), EventlogEnabled: true})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := unsupported.ExtendRuntimeMeasurement(ctx, &aapb.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c"})
	if err != nil || resp.GetResult() != aapb.RuntimeMeasurementResult_NOT_SUPPORTED {
		t.Errorf("enabled without extender: %v, %v", resp.GetResult(), err)
	}
}
