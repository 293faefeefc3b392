package sealed_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
)

var errNotFound = errors.New("resource not found")

// mapKBC serves resources from a map and records what it was asked for.
type mapKBC struct {
	mu     sync.Mutex
	res    map[string][]byte
	asked  []string
	served [][]byte
	fail   error
}

func newKBC(res map[string][]byte) *mapKBC { return &mapKBC{res: res} }

func (k *mapKBC) GetResource(_ context.Context, uri resource.URI) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.asked = append(k.asked, uri.String())
	if k.fail != nil {
		return nil, k.fail
	}
	v, ok := k.res[uri.String()]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", uri, errNotFound)
	}
	out := append([]byte(nil), v...)
	k.served = append(k.served, out)
	return out, nil
}

func (k *mapKBC) askedFor() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.asked...)
}

// loadJWK reads one of upstream's test keys.
func loadJWK(t testing.TB, name string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", "upstream", name))
	if err != nil {
		t.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil {
		t.Fatal(err)
	}
	return raw, jwk.Key.(*ecdsa.PrivateKey)
}

// publicJWK returns the public JWK of key.
func publicJWK(t testing.TB, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	b, err := jose.JSONWebKey{Key: &key.PublicKey}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// keyDir makes a key directory holding upstream's test-key.json (the
// private JWK, as upstream's tests provision it) under the name test-key.
func keyDir(t testing.TB) (string, *ecdsa.PrivateKey) {
	t.Helper()
	raw, key := loadJWK(t, "test-key.json")
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "test-key"), raw, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, key
}

func seal(t testing.TB, s *sealed.Secret, key *ecdsa.PrivateKey, kid string) string {
	t.Helper()
	out, err := sealed.Seal(s, key, kid)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kbsVault(name string) *sealed.Secret {
	return &sealed.Secret{Version: "0.1.0", Vault: &sealed.Vault{Provider: "kbs", Name: name}}
}

// TestUpstreamPayloads: upstream's payload vectors parse into the
// expected values, encode back to the same JSON, survive Seal and a
// verified open, and unseal as far as their providers allow.
func TestUpstreamPayloads(t *testing.T) {
	empty := map[string]any{}
	for _, tc := range []struct {
		file    string
		want    sealed.Secret
		unseal  string // the value, or
		wantErr string // the error
	}{
		{"envelope-1.json", sealed.Secret{Version: "0.1.0", Envelope: &sealed.Envelope{
			Provider: "aliyun", KeyID: "xxx", EncryptedKey: "yyy", EncryptedData: "zzz",
			WrapType: "A256GCM", IV: "www", ProviderSettings: empty, Annotations: empty}},
			"", `envelope provider "aliyun" is not supported`},
		{"vault-1.json", sealed.Secret{Version: "0.1.0", Vault: &sealed.Vault{
			Provider: "aliyun", Name: "xxx", ProviderSettings: empty, Annotations: empty}},
			"", `vault provider "aliyun" is not supported`},
		{"vault-2.json", sealed.Secret{Version: "0.1.0", Vault: &sealed.Vault{
			Provider: "kbs", Name: "kbs:///one/2/trois", ProviderSettings: empty, Annotations: empty}},
			"trois!", ""},
	} {
		t.Run(tc.file, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join("testdata", "upstream", tc.file))
			if err != nil {
				t.Fatal(err)
			}
			var got sealed.Secret
			if err := json.Unmarshal(raw, &got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("parsed %+v %+v %+v", got, got.Vault, got.Envelope)
			}
			enc, err := json.Marshal(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			var a, b any
			json.Unmarshal(raw, &a)
			json.Unmarshal(enc, &b)
			if !reflect.DeepEqual(a, b) {
				t.Errorf("encoded %s, upstream %s", enc, raw)
			}

			dir, key := keyDir(t)
			kbc := newKBC(map[string][]byte{"kbs:///one/2/trois": []byte("trois!")})
			u := &sealed.Unsealer{KBC: kbc, KeyDir: dir}
			s := seal(t, &tc.want, key, "test-key")
			v, err := u.Unseal(context.Background(), []byte(s))
			if tc.wantErr != "" {
				if !errors.Is(err, sealed.ErrUnsupported) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Unseal: %v, want ErrUnsupported with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || string(v) != tc.unseal {
				t.Fatalf("Unseal: %q, %v", v, err)
			}
		})
	}
}

// TestTampering changes one character in each part of a signed secret
// (upstream's check_tampering): nothing is fetched.
func TestTampering(t *testing.T) {
	dir, key := keyDir(t)
	s := seal(t, kbsVault("kbs:///one/2/trois"), key, "test-key")
	dots := []int{len("sealed"), 0, 0, len(s)}
	dots[1] = len("sealed.") + strings.Index(s[len("sealed."):], ".")
	dots[2] = strings.LastIndex(s, ".")
	for i, part := range []string{"header", "payload", "signature"} {
		for _, at := range []int{dots[i] + 3, (dots[i] + dots[i+1]) / 2} {
			t.Run(fmt.Sprintf("%s@%d", part, at), func(t *testing.T) {
				b := []byte(s)
				if b[at] == 'X' {
					b[at] = 'Y'
				} else {
					b[at] = 'X'
				}
				kbc := newKBC(map[string][]byte{"kbs:///one/2/trois": []byte("v")})
				_, err := (&sealed.Unsealer{KBC: kbc, KeyDir: dir}).Unseal(context.Background(), b)
				if err == nil {
					t.Fatal("tampered secret unsealed")
				}
				if !errors.Is(err, sealed.ErrVerification) && !errors.Is(err, sealed.ErrMalformed) {
					t.Errorf("Unseal: %v", err)
				}
				if a := kbc.askedFor(); len(a) != 0 {
					t.Errorf("fetched %v", a)
				}
			})
		}
	}
}

// TestWrongKey signs with upstream's test-key-2 under the kid of test-key
// (upstream's check_wrong_key).
func TestWrongKey(t *testing.T) {
	dir, _ := keyDir(t)
	_, key2 := loadJWK(t, "test-key-2.json")
	s := seal(t, kbsVault("kbs:///one/2/trois"), key2, "test-key")
	_, err := (&sealed.Unsealer{KBC: newKBC(nil), KeyDir: dir}).Unseal(context.Background(), []byte(s))
	if !errors.Is(err, sealed.ErrVerification) || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("Unseal: %v", err)
	}
}

func TestKidKBS(t *testing.T) {
	_, key := loadJWK(t, "test-key.json")
	const kid = "kbs:///default/sealed-key/1"
	s := seal(t, kbsVault("kbs:///default/secret/1"), key, kid)
	t.Run("ok", func(t *testing.T) {
		kbc := newKBC(map[string][]byte{kid: publicJWK(t, key), "kbs:///default/secret/1": []byte("s3cret")})
		v, err := (&sealed.Unsealer{KBC: kbc, KeyDir: t.TempDir()}).Unseal(context.Background(), []byte(s))
		if err != nil || string(v) != "s3cret" {
			t.Fatalf("Unseal: %q, %v", v, err)
		}
		if a := kbc.askedFor(); !reflect.DeepEqual(a, []string{kid, "kbs:///default/secret/1"}) {
			t.Errorf("fetched %v", a)
		}
	})
	t.Run("key not in the KBS", func(t *testing.T) {
		_, err := (&sealed.Unsealer{KBC: newKBC(nil)}).Unseal(context.Background(), []byte(s))
		if !errors.Is(err, errNotFound) || !strings.Contains(err.Error(), "fetch verification key "+kid) {
			t.Fatalf("Unseal: %v", err)
		}
	})
	t.Run("KBC fails", func(t *testing.T) {
		kbc := newKBC(nil)
		kbc.fail = errors.New("attestation refused")
		_, err := (&sealed.Unsealer{KBC: kbc}).Unseal(context.Background(), []byte(s))
		if !errors.Is(err, kbc.fail) || !strings.Contains(err.Error(), kid) {
			t.Fatalf("Unseal: %v", err)
		}
	})
	t.Run("no KBC", func(t *testing.T) {
		_, err := (&sealed.Unsealer{}).Unseal(context.Background(), []byte(s))
		if !errors.Is(err, sealed.ErrVerification) || !strings.Contains(err.Error(), "no KBC") {
			t.Fatalf("Unseal: %v", err)
		}
	})
	t.Run("secret not in the KBS", func(t *testing.T) {
		kbc := newKBC(map[string][]byte{kid: publicJWK(t, key)})
		_, err := (&sealed.Unsealer{KBC: kbc}).Unseal(context.Background(), []byte(s))
		if !errors.Is(err, errNotFound) || !strings.Contains(err.Error(), "fetch vault secret kbs:///default/secret/1") {
			t.Fatalf("Unseal: %v", err)
		}
	})
	t.Run("invalid URI", func(t *testing.T) {
		bad := seal(t, kbsVault("kbs:///default/secret/1"), key, "kbs:///only/two")
		_, err := (&sealed.Unsealer{KBC: newKBC(nil)}).Unseal(context.Background(), []byte(bad))
		if !errors.Is(err, sealed.ErrMalformed) {
			t.Fatalf("Unseal: %v", err)
		}
	})
}

func TestKidFile(t *testing.T) {
	dir, key := keyDir(t)
	outside := t.TempDir()
	_, key2 := loadJWK(t, "test-key-2.json")
	os.WriteFile(filepath.Join(outside, "evil"), publicJWK(t, key2), 0o600)
	os.Symlink(filepath.Join(outside, "evil"), filepath.Join(dir, "link-out"))
	os.Mkdir(filepath.Join(dir, "sub"), 0o700)
	os.WriteFile(filepath.Join(dir, "sub", "pub"), publicJWK(t, key), 0o600)
	os.Symlink("test-key", filepath.Join(dir, "link-in"))
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaJWK, _ := jose.JSONWebKey{Key: &rsaKey.PublicKey}.MarshalJSON()
	os.WriteFile(filepath.Join(dir, "rsa"), rsaJWK, 0o600)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b384, _ := jose.JSONWebKey{Key: &p384.PublicKey}.MarshalJSON()
	os.WriteFile(filepath.Join(dir, "p384"), b384, 0o600)
	os.WriteFile(filepath.Join(dir, "garbage"), []byte("not json"), 0o600)

	for _, tc := range []struct {
		kid  string
		want string // "" for success
	}{
		{"test-key", ""},
		{"sub/pub", ""},
		{"link-in", ""},
		{"missing", "no such file"},
		{"../" + filepath.Base(outside) + "/evil", "neither a resource URI nor a file name"},
		{filepath.Join(outside, "evil"), "neither a resource URI nor a file name"},
		{"sub/../../x", "neither a resource URI nor a file name"},
		{"link-out", "escapes"},
		{"rsa", "not an EC P-256 key"},
		{"p384", "not an EC P-256 key"},
		{"garbage", "not a JWK"},
	} {
		t.Run(tc.kid, func(t *testing.T) {
			signer := key
			if tc.kid == "link-out" {
				signer = key2 // would verify, were the link followed
			}
			s := seal(t, kbsVault("kbs:///a/b/c"), signer, tc.kid)
			kbc := newKBC(map[string][]byte{"kbs:///a/b/c": []byte("value")})
			v, err := (&sealed.Unsealer{KBC: kbc, KeyDir: dir}).Unseal(context.Background(), []byte(s))
			if tc.want == "" {
				if err != nil || string(v) != "value" {
					t.Fatalf("Unseal: %q, %v", v, err)
				}
				return
			}
			if !errors.Is(err, sealed.ErrVerification) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unseal: %v, want ErrVerification with %q", err, tc.want)
			}
			if a := kbc.askedFor(); len(a) != 0 {
				t.Errorf("fetched %v", a)
			}
		})
	}
}

// forge builds "sealed.<header>.<payload>.<sig>" from raw parts.
func forge(header, payload string, sig []byte) string {
	e := base64.RawURLEncoding
	return "sealed." + e.EncodeToString([]byte(header)) + "." + e.EncodeToString([]byte(payload)) + "." + e.EncodeToString(sig)
}

const vaultPayload = `{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c","provider_settings":{},"annotations":{}}`

// TestAlgorithms: only ES256 is accepted, before any key is fetched.
func TestAlgorithms(t *testing.T) {
	sig := make([]byte, 64)
	for _, tc := range []struct {
		name, header string
		sig          []byte
		class        error
	}{
		{"none", `{"alg":"none","kid":"kbs:///k/e/y"}`, nil, sealed.ErrUnsupported},
		{"HS256", `{"alg":"HS256","kid":"kbs:///k/e/y"}`, make([]byte, 32), sealed.ErrUnsupported},
		{"RS256", `{"alg":"RS256","kid":"kbs:///k/e/y"}`, make([]byte, 256), sealed.ErrUnsupported},
		{"ES384", `{"alg":"ES384","kid":"kbs:///k/e/y"}`, make([]byte, 96), sealed.ErrUnsupported},
		{"lower-case es256", `{"alg":"es256","kid":"kbs:///k/e/y"}`, sig, sealed.ErrUnsupported},
		{"no alg", `{"kid":"kbs:///k/e/y"}`, sig, sealed.ErrMalformed},
		{"ALG", `{"ALG":"ES256","kid":"kbs:///k/e/y"}`, sig, sealed.ErrMalformed},
		{"alg not a string", `{"alg":1,"kid":"kbs:///k/e/y"}`, sig, sealed.ErrMalformed},
		{"crit", `{"alg":"ES256","kid":"kbs:///k/e/y","crit":["b64"],"b64":false}`, sig, sealed.ErrUnsupported},
		{"no kid", `{"alg":"ES256"}`, sig, sealed.ErrMalformed},
		{"empty kid", `{"alg":"ES256","kid":""}`, sig, sealed.ErrMalformed},
		{"DER signature", `{"alg":"ES256","kid":"kbs:///k/e/y"}`, make([]byte, 70), sealed.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kbc := newKBC(nil)
			_, err := (&sealed.Unsealer{KBC: kbc}).Unseal(context.Background(), []byte(forge(tc.header, vaultPayload, tc.sig)))
			if !errors.Is(err, tc.class) {
				t.Fatalf("Unseal: %v, want %v", err, tc.class)
			}
			if a := kbc.askedFor(); len(a) != 0 {
				t.Errorf("fetched %v", a)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	dir, key := keyDir(t)
	good := seal(t, kbsVault("kbs:///a/b/c"), key, "test-key")
	parts := strings.Split(strings.TrimPrefix(good, "sealed."), ".")
	join := func(p ...string) string { return "sealed." + strings.Join(p, ".") }
	hdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"test-key"}`))
	for _, tc := range []struct {
		name, secret string
		want         string
	}{
		{"no prefix", strings.TrimPrefix(good, "sealed."), "does not start with"},
		{"other prefix", "Sealed." + strings.TrimPrefix(good, "sealed."), "does not start with"},
		{"two parts", join(parts[0], parts[1]), "2 dot-separated parts"},
		{"four parts", join(parts[0], parts[1], parts[2], "x"), "4 dot-separated parts"},
		{"header padded", join(parts[0]+"=", parts[1], parts[2]), "header is not base64url"},
		{"header std base64", join(parts[0][:4]+"+"+parts[0][5:], parts[1], parts[2]), "header is not base64url"},
		{"header not JSON", join(base64.RawURLEncoding.EncodeToString([]byte("{alg")), parts[1], parts[2]), "header is not a JSON object"},
		{"header array", join(base64.RawURLEncoding.EncodeToString([]byte(`["ES256"]`)), parts[1], parts[2]), "header is not a JSON object"},
		{"signature bad base64", join(parts[0], parts[1], parts[2][:10]+"*"+parts[2][11:]), "signature is not base64url"},
		{"signature short", join(parts[0], parts[1], parts[2][:84]), "signature is 63 bytes"},
		{"empty", "sealed.", "1 dot-separated parts"},
		{"payload bad base64 (signed)", join(hdr, "a", parts[2]), "does not verify"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := (&sealed.Unsealer{KBC: newKBC(nil), KeyDir: dir}).Unseal(context.Background(), []byte(tc.secret))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unseal: %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPayloads signs hand-written payloads and checks how they fail.
func TestPayloads(t *testing.T) {
	dir, key := keyDir(t)
	sign := func(payload string) string {
		e := base64.RawURLEncoding
		input := e.EncodeToString([]byte(`{"alg":"ES256","kid":"test-key"}`)) + "." + e.EncodeToString([]byte(payload))
		d := sha256.Sum256([]byte(input))
		r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
		return "sealed." + input + "." + e.EncodeToString(sig)
	}
	for _, tc := range []struct {
		name, payload string
		class         error
		want          string // "" for success
	}{
		{"ok", vaultPayload, nil, ""},
		{"ok, no maps", `{"version":"0.1.0","type":"vault","provider":"KBS","name":"kbs:///a/b/c","extra":1}`, nil, ""},
		{"not JSON", `{"version":`, sealed.ErrMalformed, "payload is not JSON"},
		{"array", `[1]`, sealed.ErrMalformed, "not a JSON object"},
		{"unknown type", `{"version":"0.1.0","type":"kms","provider":"kbs","name":"kbs:///a/b/c"}`, sealed.ErrUnsupported, `type "kms"`},
		{"type case", `{"version":"0.1.0","type":"Vault","provider":"kbs","name":"kbs:///a/b/c"}`, sealed.ErrUnsupported, `type "Vault"`},
		{"no type", `{"version":"0.1.0","provider":"kbs","name":"kbs:///a/b/c"}`, sealed.ErrMalformed, `no "type"`},
		{"version", `{"version":"0.2.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c"}`, sealed.ErrUnsupported, `version "0.2.0"`},
		{"no version", `{"type":"vault","provider":"kbs","name":"kbs:///a/b/c"}`, sealed.ErrMalformed, `no "version"`},
		{"no name", `{"version":"0.1.0","type":"vault","provider":"kbs"}`, sealed.ErrMalformed, `no "name"`},
		{"NAME", `{"version":"0.1.0","type":"vault","provider":"kbs","NAME":"kbs:///a/b/c"}`, sealed.ErrMalformed, `no "name"`},
		{"name number", `{"version":"0.1.0","type":"vault","provider":"kbs","name":7}`, sealed.ErrMalformed, `"name" is not a string`},
		{"name null", `{"version":"0.1.0","type":"vault","provider":"kbs","name":null}`, sealed.ErrMalformed, `"name" is not a string`},
		{"settings array", `{"version":"0.1.0","type":"vault","provider":"kbs","name":"kbs:///a/b/c","provider_settings":[]}`, sealed.ErrMalformed, `"provider_settings" is not a JSON object`},
		{"name not a URI", `{"version":"0.1.0","type":"vault","provider":"kbs","name":"a/b/c"}`, sealed.ErrMalformed, "vault secret"},
		{"vault aws", `{"version":"0.1.0","type":"vault","provider":"aws","name":"x"}`, sealed.ErrUnsupported, `vault provider "aws"`},
		{"envelope missing iv", `{"version":"0.1.0","type":"envelope","provider":"kbs","key_id":"kbs:///a/b/k","encrypted_key":"","encrypted_data":"","wrap_type":"A256GCM"}`, sealed.ErrMalformed, `no "iv"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kbc := newKBC(map[string][]byte{"kbs:///a/b/c": []byte("value")})
			v, err := (&sealed.Unsealer{KBC: kbc, KeyDir: dir}).Unseal(context.Background(), []byte(sign(tc.payload)))
			if tc.want == "" {
				if err != nil || string(v) != "value" {
					t.Fatalf("Unseal: %q, %v", v, err)
				}
				return
			}
			if !errors.Is(err, tc.class) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unseal: %v, want %v with %q", err, tc.class, tc.want)
			}
		})
	}
}

// TestSkipVerification: header and signature are ignored, as upstream's
// switch; the count of parts still matters.
func TestSkipVerification(t *testing.T) {
	payload := base64.RawURLEncoding.EncodeToString([]byte(vaultPayload))
	fake := "sealed.fakejwsheader." + payload + ".fakesignature"
	kbc := newKBC(map[string][]byte{"kbs:///a/b/c": []byte("value")})
	skip := &sealed.Unsealer{KBC: kbc, SkipVerification: true}
	if v, err := skip.Unseal(context.Background(), []byte(fake)); err != nil || string(v) != "value" {
		t.Fatalf("Unseal: %q, %v", v, err)
	}
	// A signed secret by an unknown key also passes.
	_, key2 := loadJWK(t, "test-key-2.json")
	if v, err := skip.Unseal(context.Background(), []byte(seal(t, kbsVault("kbs:///a/b/c"), key2, "nobody"))); err != nil || string(v) != "value" {
		t.Fatalf("Unseal: %q, %v", v, err)
	}
	for _, bad := range []string{"sealed.h." + payload, "sealed.h." + payload + ".s.x", "sealed.h." + payload + "=.s"} {
		if _, err := skip.Unseal(context.Background(), []byte(bad)); !errors.Is(err, sealed.ErrMalformed) {
			t.Errorf("Unseal(%q): %v", bad, err)
		}
	}
	// Verification refuses the fake header.
	if _, err := (&sealed.Unsealer{KBC: kbc}).Unseal(context.Background(), []byte(fake)); !errors.Is(err, sealed.ErrMalformed) {
		t.Errorf("verifying Unseal of a fake header: %v", err)
	}
}

func TestSeal(t *testing.T) {
	_, key := loadJWK(t, "test-key.json")
	s := seal(t, kbsVault("kbs:///a/b/c"), key, "my-kid")
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != "sealed" {
		t.Fatalf("sealed %q", s)
	}
	dec := func(p string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if h := string(dec(parts[1])); h != `{"alg":"ES256","kid":"my-kid"}` {
		t.Errorf("header %s", h)
	}
	var a, b any
	json.Unmarshal(dec(parts[2]), &a)
	json.Unmarshal([]byte(vaultPayload), &b)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("payload %s", dec(parts[2]))
	}
	sig := dec(parts[3])
	d := sha256.Sum256([]byte(parts[1] + "." + parts[2]))
	if len(sig) != 64 || !ecdsa.Verify(&key.PublicKey, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("signature does not verify")
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, f := range map[string]func() error{
		"P-384 key": func() error { _, err := sealed.Seal(kbsVault("kbs:///a/b/c"), p384, "k"); return err },
		"nil key":   func() error { _, err := sealed.Seal(kbsVault("kbs:///a/b/c"), nil, "k"); return err },
		"empty kid": func() error { _, err := sealed.Seal(kbsVault("kbs:///a/b/c"), key, ""); return err },
		"no type": func() error {
			_, err := sealed.Seal(&sealed.Secret{Version: "0.1.0"}, key, "k")
			return err
		},
	} {
		if f() == nil {
			t.Errorf("Seal with %s succeeded", name)
		}
	}
}

func TestConcurrentUnseal(t *testing.T) {
	dir, key := keyDir(t)
	kbc := newKBC(map[string][]byte{"kbs:///a/b/c": []byte("value")})
	u := &sealed.Unsealer{KBC: kbc, KeyDir: dir}
	s := []byte(seal(t, kbsVault("kbs:///a/b/c"), key, "test-key"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if v, err := u.Unseal(context.Background(), s); err != nil || string(v) != "value" {
				t.Errorf("Unseal: %q, %v", v, err)
			}
		})
	}
	wg.Wait()
}
