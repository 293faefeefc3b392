package kbs_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/resource"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// adminKBS starts a test KBS that trusts admin and releases everything to
// the sample TEE.
func adminKBS(t *testing.T, admin ed25519.PublicKey, tls bool, mod func(*testkbs.Config)) (*kbstest.Instance, string) {
	t.Helper()
	repo := t.TempDir()
	cfg := testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(), AdminKey: admin,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}}
	if mod != nil {
		mod(&cfg)
	}
	if tls {
		return kbstest.StartTLS(t, cfg), repo
	}
	return kbstest.Start(t, cfg), repo
}

func adminURI(t *testing.T, s string) resource.URI {
	t.Helper()
	u, err := resource.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestAdminSetGetDelete(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(map[bool]string{false: "http", true: "https"}[useTLS], func(t *testing.T) {
			pub, priv := kbstest.NewAdminKey(t)
			k, repo := adminKBS(t, pub, useTLS, nil)
			a, err := kbs.NewAdmin(k.URL, priv, k.CAPEM)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			uri := adminURI(t, "kbs:///default/key/admin-test")
			secret := []byte("0123456789abcdef0123456789abcdef")
			if err := a.SetResource(ctx, uri, secret); err != nil {
				t.Fatalf("SetResource: %v", err)
			}
			if got, err := os.ReadFile(filepath.Join(repo, "default", "key", "admin-test")); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("stored %q, %v", got, err)
			}
			// The guest side reads it back through attestation.
			c, err := kbs.New(kbs.Config{URL: k.URL, CertPEM: k.CAPEM, Attester: sample.New(), Timeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if got, err := c.GetResource(ctx, uri); err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("GetResource = %q, %v", got, err)
			}
			// Overwrite.
			if err := a.SetResource(ctx, uri, []byte("v2")); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(filepath.Join(repo, "default", "key", "admin-test")); string(got) != "v2" {
				t.Fatalf("after overwrite: %q", got)
			}
			if err := a.DeleteResource(ctx, uri); err != nil {
				t.Fatalf("DeleteResource: %v", err)
			}
			if _, err := os.Stat(filepath.Join(repo, "default", "key", "admin-test")); !os.IsNotExist(err) {
				t.Fatalf("resource still there after delete: %v", err)
			}
			if _, err := c.GetResource(ctx, uri); err == nil {
				t.Fatal("GetResource after delete succeeded")
			}
			st := k.Server.Stats()
			if st.AdminWrites != 2 || st.AdminDeletes != 1 || st.AdminFailed != 0 {
				t.Errorf("KBS stats %+v", st)
			}
		})
	}
}

func TestAdminErrors(t *testing.T) {
	pub, priv := kbstest.NewAdminKey(t)
	_, wrong := kbstest.NewAdminKey(t)
	for _, tc := range []struct {
		name       string
		kbsKey     ed25519.PublicKey
		key        ed25519.PrivateKey
		mod        func(*testkbs.Config)
		data       []byte
		uri        string
		status     int
		variant    string
		wantInText []string
	}{
		{name: "wrong key", kbsKey: pub, key: wrong, uri: "kbs:///default/key/1", status: 401,
			variant: "AdminAuthInitialization", wantInText: []string{"HTTP 401", "does not verify with the admin key"}},
		{name: "admin disabled", kbsKey: nil, key: priv, uri: "kbs:///default/key/1", status: 401,
			variant: "AdminAuthInitialization", wantInText: []string{"admin API is disabled"}},
		{name: "body too large (plain-text answer)", kbsKey: pub, key: priv, uri: "kbs:///default/key/1",
			mod: func(c *testkbs.Config) { c.MaxBodyBytes = 8 }, data: bytes.Repeat([]byte("x"), 64),
			status: 413, wantInText: []string{"HTTP 413", "Payload reached size limit."}},
		{name: "kbs+resource is kbs", kbsKey: pub, key: priv, uri: "kbs+resource:///default/key/1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, _ := adminKBS(t, tc.kbsKey, false, tc.mod)
			a, err := kbs.NewAdmin(k.URL, tc.key, nil)
			if err != nil {
				t.Fatal(err)
			}
			data := tc.data
			if data == nil {
				data = []byte("k")
			}
			err = a.SetResource(context.Background(), adminURI(t, tc.uri), data)
			if tc.status == 0 {
				if err != nil {
					t.Fatalf("SetResource: %v", err)
				}
				return
			}
			var ke *kbs.Error
			if !errors.As(err, &ke) {
				t.Fatalf("error %v (%T), want *kbs.Error", err, err)
			}
			if ke.Status != tc.status || ke.Step != "set resource" || !strings.HasSuffix(ke.URL, "/kbs/v0/resource/default/key/1") {
				t.Errorf("error %+v", ke)
			}
			if tc.variant != "" && (ke.Info == nil || ke.Info.Variant() != tc.variant) {
				t.Errorf("info %+v, want variant %s", ke.Info, tc.variant)
			}
			for _, s := range tc.wantInText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
		})
	}
}

func TestAdminToken(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kbs.NewAdmin("http://127.0.0.1:1", priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Token()
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(got, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not a compact JWS", got)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil || len(h) != 2 || h["alg"] != "EdDSA" || h["typ"] != "JWT" {
		t.Errorf("header %s", hdr)
	}
	tok, err := jwt.ParseSigned(got, []jose.SignatureAlgorithm{jose.EdDSA})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := tok.Claims(pub, &claims); err != nil {
		t.Fatalf("signature: %v", err)
	}
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if len(claims) != 3 || claims["role"] != "admin" || exp-iat != 7200 ||
		time.Since(time.Unix(int64(iat), 0)).Abs() > time.Minute {
		t.Errorf("claims %v", claims)
	}
}

func TestNewAdmin(t *testing.T) {
	_, priv := kbstest.NewAdminKey(t)
	for _, tc := range []struct {
		name string
		url  string
		key  ed25519.PrivateKey
		cert []byte
		ok   bool
	}{
		{"http", "http://127.0.0.1:8080", priv, nil, true},
		{"https trailing slash", "https://kbs.example/", priv, nil, true},
		{"no scheme", "127.0.0.1:8080", priv, nil, false},
		{"ftp", "ftp://x", priv, nil, false},
		{"short key", "http://127.0.0.1:8080", priv[:32], nil, false},
		{"bad cert", "https://kbs.example", priv, []byte("not PEM"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := kbs.NewAdmin(tc.url, tc.key, tc.cert)
			if (err == nil) != tc.ok {
				t.Errorf("err %v, want ok=%v", err, tc.ok)
			}
		})
	}
	a, err := kbs.NewAdmin("http://127.0.0.1:1", priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetResource(context.Background(), resource.URI{Plugin: "resource", Segments: []string{"a", "b", "c"}, Query: "x=1"}, []byte("k")); err == nil || !strings.Contains(err.Error(), "no query") {
		t.Errorf("query: %v", err)
	}
	if err := a.SetResource(context.Background(), resource.URI{Plugin: "resource", Segments: []string{"a"}}, []byte("k")); err == nil {
		t.Error("invalid URI accepted")
	}
}
