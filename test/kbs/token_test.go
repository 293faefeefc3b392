package kbs

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"reflect"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
)

var update = flag.Bool("update", false, "rewrite golden files")

// payload decodes a JWT's claims without verifying it.
func payload(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestTokenGolden(t *testing.T) {
	e := newEnv(t, nil)
	key := newKey(t, teekey.ECP256)
	init := &protocol.InitData{Format: "toml", Body: string(readFile(t, "testdata/initdata.toml"))}
	ch, cookie := e.auth()
	tok := e.attest(cookie, attestation(t, ch, key.Public(), init))

	// Header: ES256, typ JWT and the signer as a P-256 JWK.
	hdrB64, _, _ := strings.Cut(tok, ".")
	hb, err := base64.RawURLEncoding.DecodeString(hdrB64)
	if err != nil {
		t.Fatal(err)
	}
	var hdr struct {
		Alg string            `json:"alg"`
		Typ string            `json:"typ"`
		JWK map[string]string `json:"jwk"`
	}
	if err := json.Unmarshal(hb, &hdr); err != nil {
		t.Fatal(err)
	}
	if hdr.Alg != "ES256" || hdr.Typ != "JWT" || hdr.JWK["kty"] != "EC" || hdr.JWK["crv"] != "P-256" || hdr.JWK["alg"] != "ES256" {
		t.Errorf("header = %s", hb)
	}
	// The header key verifies the token (what trustee does with
	// insecure_header_jwk), and it is the server's key.
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(mustJSON(t, hdr.JWK), &jwk); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify(jwk.Key); err != nil {
		t.Errorf("token does not verify with its header jwk: %v", err)
	}

	claims := payload(t, tok)

	// The KBS finds the TEE key at trustee's EAR path.
	got, err := teePubKey(claims)
	if err != nil {
		t.Fatal(err)
	}
	if got != key.Public() {
		t.Errorf("tee-pubkey at %s = %+v, want %+v", TeePubKeyPath, got, key.Public())
	}
	if tee := tokenTee(claims); tee != "sample" {
		t.Errorf("tokenTee = %q", tee)
	}
	digest, err := protocol.ReportData(protocol.SHA384, ch.Nonce, key.Public(), "")
	if err != nil {
		t.Fatal(err)
	}

	// Replace what varies from run to run, then compare with the golden
	// layout.
	ae := claims["submods"].(map[string]any)["cpu0"].(map[string]any)[AnnotatedClaim].(map[string]any)
	if ae["report_data"] != hex.EncodeToString(digest) {
		t.Errorf("report_data = %v, want hex of the binding digest", ae["report_data"])
	}
	ae["report_data"] = "<report_data>"
	rdc := ae["runtime_data_claims"].(map[string]any)
	if rdc["nonce"] != ch.Nonce {
		t.Errorf("runtime_data_claims.nonce = %v", rdc["nonce"])
	}
	rdc["nonce"] = "<nonce>"
	pk := rdc["tee-pubkey"].(map[string]any)
	pk["x"], pk["y"] = "<x>", "<y>"

	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(claims); err != nil {
		t.Fatal(err)
	}
	gotJSON := buf.Bytes()
	const golden = "testdata/ear-sample.golden.json"
	if *update {
		if err := os.WriteFile(golden, gotJSON, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readFile(t, golden)
	var a, b any
	if err := json.Unmarshal(gotJSON, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Errorf("token claims differ from %s:\n%s", golden, gotJSON)
	}
}

func TestTokenVerify(t *testing.T) {
	k, err := newTokenKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := newTokenKey()
	if err != nil {
		t.Fatal(err)
	}
	now := start
	sign := func(k *tokenKey, claims map[string]any) string {
		tok, err := k.sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	tests := []struct {
		name, tok, err string
	}{
		{"good", sign(k, map[string]any{"exp": now.Unix() + 10}), ""},
		{"no exp", sign(k, map[string]any{"iat": now.Unix()}), "missing required claim: exp"},
		{"expired beyond leeway", sign(k, map[string]any{"exp": now.Unix() - 61}), "token expired"},
		{"expired within leeway", sign(k, map[string]any{"exp": now.Unix() - 60}), ""},
		{"not yet valid", sign(k, map[string]any{"exp": now.Unix() + 3600, "nbf": now.Unix() + 120}), "not valid before"},
		{"other key", sign(other, map[string]any{"exp": now.Unix() + 10}), "verify attestation token"},
		{"tampered", func() string {
			tok := sign(k, map[string]any{"exp": now.Unix() + 10})
			p := strings.Split(tok, ".")
			p[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"exp":99999999999}`))
			return strings.Join(p, ".")
		}(), "verify attestation token"},
		{"alg none", "eyJhbGciOiJub25lIn0.eyJleHAiOjk5OTk5OTk5OTl9.", "parse attestation token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := k.verify(tt.tok, now)
			if tt.err == "" {
				if err != nil {
					t.Errorf("verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("verify = %v, want error containing %q", err, tt.err)
			}
		})
	}
}

func TestTeePubKeyFromClaims(t *testing.T) {
	good := map[string]any{"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "x", "y": "y", "extra": 1}
	tests := []struct {
		name   string
		claims map[string]any
		err    string
	}{
		{"found", map[string]any{"submods": map[string]any{"cpu0": map[string]any{AnnotatedClaim: map[string]any{
			"runtime_data_claims": map[string]any{"tee-pubkey": good}}}}}, ""},
		{"absent", map[string]any{"tee-pubkey": good}, "Tee public key not found"},
		{"malformed", map[string]any{"submods": map[string]any{"cpu0": map[string]any{AnnotatedClaim: map[string]any{
			"runtime_data_claims": map[string]any{"tee-pubkey": map[string]any{"kty": "EC"}}}}}}, "Failed to parse Tee public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := teePubKey(tt.claims)
			if tt.err == "" {
				want := protocol.TeePubKey{Kty: "EC", Crv: "P-256", Alg: "ECDH-ES+A256KW", X: "x", Y: "y"}
				if err != nil || k != want {
					t.Errorf("teePubKey = %+v, %v", k, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("teePubKey err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestPointer(t *testing.T) {
	doc := map[string]any{"a/b": map[string]any{"c~d": 1}, "e": "f"}
	for _, tt := range []struct {
		ptr string
		ok  bool
	}{{"/a~1b/c~0d", true}, {"/e", true}, {"/e/x", false}, {"/x", false}, {"e", false}, {"", true}} {
		if _, ok := pointer(doc, tt.ptr); ok != tt.ok {
			t.Errorf("pointer(%q) ok = %v", tt.ptr, ok)
		}
	}
}

func TestInitData(t *testing.T) {
	body := string(readFile(t, "testdata/initdata.toml"))
	p, err := parseInitData(&protocol.InitData{Format: "toml", Body: body})
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := protocol.SHA384.Sum([]byte(body))
	if !bytes.Equal(p.digest, sum) {
		t.Error("digest is not the SHA-384 of the whole body")
	}
	want := map[string]any{
		"aa.toml":             map[string]any{"token_configs": map[string]any{"kbs": map[string]any{"url": "http://127.0.0.1:8080"}}},
		"agent_policy_claims": map[string]any{"containers": []any{"pause"}, "sandbox": map[string]any{"storage_classes": []any{}}},
		"note":                "kept as a string",
	}
	var got any
	if err := json.Unmarshal(mustJSON(t, p.claims), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("claims = %s", mustJSON(t, p.claims))
	}

	tests := []struct{ format, body, err string }{
		{"json", body, `format "json" is not supported`},
		{"toml", `algorithm = "sha384"` + "\n[data]\n", "missing field `version`"},
		{"toml", `version = "0.1.0"` + "\n[data]\n", "missing field `algorithm`"},
		{"toml", `version = "0.1.0"` + "\nalgorithm = \"sha384\"\n", "missing field `data`"},
		{"toml", `version = "0.1.0"` + "\nalgorithm = \"SHA384\"\n[data]\n", `algorithm "SHA384" is not supported`},
		{"toml", `version = "0.1.0"` + "\nalgorithm = \"sm3\"\n[data]\n", `algorithm "sm3" is not supported`},
		{"toml", `version = 1` + "\nalgorithm = \"sha384\"\n[data]\n", "`version` is a int64"},
		{"toml", `version = "0.1.0"` + "\nalgorithm = \"sha384\"\n[data]\nx = 1\n", `data."x" is a int64`},
		{"toml", `version = `, "parse init-data TOML"},
	}
	for _, tt := range tests {
		t.Run(tt.err, func(t *testing.T) {
			_, err := parseInitData(&protocol.InitData{Format: tt.format, Body: tt.body})
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseInitData = %v, want error containing %q", err, tt.err)
			}
		})
	}
	// A sha256 document hashes with sha256.
	small := "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n"
	p, err = parseInitData(&protocol.InitData{Format: "toml", Body: small})
	if err != nil || len(p.digest) != 32 || len(p.claims) != 0 {
		t.Errorf("sha256 init-data: %v, digest %d bytes", err, len(p.digest))
	}
}

func TestCheckVersion(t *testing.T) {
	for _, tt := range []struct {
		v  string
		ok bool
	}{
		{"0.4.0", true}, {"0.4.0+build.1", true}, {"0.4.0+001", true},
		{"0.4.0-rc.1", false}, {"0.3.0", false}, {"0.4.1", false}, {"1.4.0", false},
		{"0.4", false}, {"0.4.0.0", false}, {" 0.4.0", false}, {"0.4.0 ", false}, {"=0.4.0", false},
		{"00.4.0", false}, {"0.4.0-01", false}, {"0.4.0+", false}, {"0.4.0-", false},
		{"0.4.0+a..b", false}, {"", false}, {"99999999999999999999.0.0", false},
	} {
		if err := checkVersion(tt.v); (err == nil) != tt.ok {
			t.Errorf("checkVersion(%q) = %v, want ok=%v", tt.v, err, tt.ok)
		}
	}
}
