package teekey_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
	"github.com/guestd/guestd/test/kbs"
)

var algorithms = []teekey.Algorithm{teekey.ECP256, teekey.ECP521, teekey.RSAOAEP256}

func TestParseAlgorithm(t *testing.T) {
	for in, want := range map[string]teekey.Algorithm{
		"": teekey.ECP256, "ECDH-ES+A256KW-P256": teekey.ECP256,
		"ECDH-ES+A256KW-P521": teekey.ECP521, "RSA-OAEP-256": teekey.RSAOAEP256,
	} {
		if got, err := teekey.ParseAlgorithm(in); err != nil || got != want {
			t.Errorf("ParseAlgorithm(%q) = %q, %v", in, got, err)
		}
	}
	for _, bad := range []string{"RSA1_5", "ML-KEM-768+A192KW", "p256"} {
		if _, err := teekey.ParseAlgorithm(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseAlgorithm(%q) error %v does not name the value", bad, err)
		}
	}
}

// TestRoundTrip seals with the test KBS's trustee-exact encoder and opens
// with the client key, for every key algorithm.
func TestRoundTrip(t *testing.T) {
	for _, alg := range algorithms {
		t.Run(string(alg), func(t *testing.T) {
			k, err := teekey.Generate(alg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := teekey.ParsePublic(k.Public()); err != nil {
				t.Fatalf("own public key does not parse: %v", err)
			}
			for _, msg := range [][]byte{[]byte("secret resource"), {}, bytes.Repeat([]byte{7}, 1<<16)} {
				resp, err := kbs.Seal(k.Public(), msg)
				if err != nil {
					t.Fatal(err)
				}
				got, err := k.Decrypt(resp)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatalf("round trip changed the plaintext")
				}
			}
		})
	}
}

func TestProtectedHeaderShape(t *testing.T) {
	k, err := teekey.Generate(teekey.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := kbs.Seal(k.Public(), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.RawURLEncoding.DecodeString(resp.Protected)
	if err != nil {
		t.Fatal(err)
	}
	// trustee's order: alg, enc, epk{crv, kty, x, y}; compact.
	if !strings.HasPrefix(string(raw), `{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{"crv":"P-256","kty":"EC","x":"`) {
		t.Fatalf("protected header %s is not in trustee's member order", raw)
	}
}

func TestDecryptRefuses(t *testing.T) {
	ec, err := teekey.Generate(teekey.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	other, err := teekey.Generate(teekey.ECP256)
	if err != nil {
		t.Fatal(err)
	}
	good, err := kbs.Seal(ec.Public(), []byte("payload"))
	if err != nil {
		t.Fatal(err)
	}
	withHeader := func(h string) protocol.Response {
		r := good
		r.Protected = base64.RawURLEncoding.EncodeToString([]byte(h))
		return r
	}
	flip := func(s string) string {
		b, _ := base64.RawURLEncoding.DecodeString(s)
		b[0] ^= 1
		return base64.RawURLEncoding.EncodeToString(b)
	}
	tampered := good
	tampered.Ciphertext = flip(good.Ciphertext)
	badTag := good
	badTag.Tag = flip(good.Tag)
	hdr, _ := base64.RawURLEncoding.DecodeString(good.Protected)
	var m map[string]any
	_ = json.Unmarshal(hdr, &m)
	m["zip"] = "DEF"
	reordered, _ := json.Marshal(m) // valid header, other bytes: AAD no longer matches

	for _, tc := range []struct {
		name string
		key  *teekey.Key
		resp protocol.Response
		want string
	}{
		{"wrong key", other, good, "decrypt"},
		{"RSA1_5", ec, withHeader(`{"alg":"RSA1_5","enc":"A256GCM"}`), `"RSA1_5" refused`},
		{"dir", ec, withHeader(`{"alg":"dir","enc":"A256GCM"}`), `"dir" refused`},
		{"A128GCM", ec, withHeader(`{"alg":"ECDH-ES+A256KW","enc":"A128GCM"}`), `"A128GCM" refused`},
		{"A256CBC-HS512", ec, withHeader(`{"alg":"ECDH-ES+A256KW","enc":"A256CBC-HS512"}`), "refused"},
		{"not base64", ec, protocol.Response{Protected: "!!"}, "base64url"},
		{"not json", ec, withHeader("nope"), "not JSON"},
		{"tampered ciphertext", ec, tampered, "decrypt"},
		{"tampered tag", ec, badTag, "decrypt"},
		{"header changed", ec, withHeader(string(reordered)), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.key.Decrypt(tc.resp)
			if err == nil {
				t.Fatal("Decrypt succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParsePublicRejects(t *testing.T) {
	k, _ := teekey.Generate(teekey.ECP256)
	pub := k.Public()
	offCurve := pub
	offCurve.Y = offCurve.X
	for name, bad := range map[string]protocol.TeePubKey{
		"off curve":   offCurve,
		"curve P-384": {Kty: "EC", Crv: "P-384", Alg: "ECDH-ES+A256KW", X: pub.X, Y: pub.Y},
		"short x":     {Kty: "EC", Crv: "P-256", Alg: "ECDH-ES+A256KW", X: "AAAA", Y: pub.Y},
		"wrong alg":   {Kty: "EC", Crv: "P-256", Alg: "ECDH-ES", X: pub.X, Y: pub.Y},
		"kty OKP":     {Kty: "OKP", Alg: "ECDH-ES+A256KW"},
		"tiny RSA":    {Kty: "RSA", Alg: "RSA-OAEP-256", N: "AQAB", E: "AQAB"},
	} {
		if _, err := teekey.ParsePublic(bad); err == nil {
			t.Errorf("%s: ParsePublic accepted %+v", name, bad)
		}
	}
}
