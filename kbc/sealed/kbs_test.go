package sealed_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// TestKBS unseals through a real KBS client that attests (sample attester)
// to the test KBS: the verification key, the vault secret and the envelope
// KEK are all KBS resources.
func TestKBS(t *testing.T) {
	ctx := context.Background()
	pub, priv := kbstest.NewAdminKey(t)
	k := kbstest.Start(t, testkbs.Config{RepoDir: t.TempDir(), Policy: testkbs.AllowAll(), AdminKey: pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	admin, err := kbs.NewAdmin(k.URL, priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, key := loadJWK(t, "test-key.json")
	kek := mustHex(t, rfcKEK)
	for uri, data := range map[string][]byte{
		"kbs:///default/sealed-key/1": publicJWK(t, key),
		"kbs:///default/secret/1":     []byte("vault value"),
		kekURI:                        kek,
	} {
		u, err := resource.Parse(uri)
		if err != nil {
			t.Fatal(err)
		}
		if err := admin.SetResource(ctx, u, data); err != nil {
			t.Fatal(err)
		}
	}
	client, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	u := &sealed.Unsealer{KBC: client, KeyDir: t.TempDir()}
	const kid = "kbs:///default/sealed-key/1"

	v, err := u.Unseal(ctx, []byte(seal(t, kbsVault("kbs:///default/secret/1"), key, kid)))
	if err != nil || string(v) != "vault value" {
		t.Fatalf("vault: %q, %v", v, err)
	}
	env, err := sealed.NewKBSEnvelope(kekURI, kek, []byte("envelope value"))
	if err != nil {
		t.Fatal(err)
	}
	v, err = u.Unseal(ctx, []byte(seal(t, &sealed.Secret{Version: "0.1.0", Envelope: env}, key, kid)))
	if err != nil || string(v) != "envelope value" {
		t.Fatalf("envelope: %q, %v", v, err)
	}
	// A missing resource surfaces the KBS client's error with the URI.
	_, err = u.Unseal(ctx, []byte(seal(t, kbsVault("kbs:///default/secret/missing"), key, kid)))
	var kerr *kbs.Error
	if !errors.As(err, &kerr) || !strings.Contains(err.Error(), "kbs:///default/secret/missing") {
		t.Fatalf("missing secret: %v", err)
	}
}
