package imagepull_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
)

// TestTokenAuthRegistry: a registry that takes bearer tokens from a token
// server (the Docker Hub/quay/ghcr flow); the user and password come from
// an auth.json in the KBS and c/image trades them for a token.
func TestTokenAuthRegistry(t *testing.T) {
	e := newEnv(t)
	reg := registry.Start(t, registry.Options{TLS: true, Token: true, Htpasswd: map[string]string{"alice": "s3cret"}})
	ref := images.Push(t, images.Busybox(t), reg, "priv/busybox:1")
	auth, err := os.ReadFile(reg.AuthJSON(t))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kbs:///default/credential/token", auth)
	wrong, err := os.ReadFile(registry.WriteAuthJSON(t, map[string][2]string{reg.Host: {"alice", "not-the-password"}}))
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kbs:///default/credential/wrong", wrong)
	image := reg.Host + "/priv/busybox:1"
	pull := func(t *testing.T, authURI string) (string, *imagepull.Puller, digest.Digest, error) {
		t.Helper()
		p := e.puller(t, func(o *imagepull.Options) {
			o.InsecureRegistries = nil
			o.ExtraRootCAs = [][]byte{reg.CAPEM}
			o.AuthURI = authURI
		})
		bundle := t.TempDir()
		d, err := p.Pull(context.Background(), image, bundle)
		return bundle, p, d, err
	}

	t.Run("anonymous", func(t *testing.T) {
		n := len(reg.Token.Grants())
		bundle, _, _, err := pull(t, "")
		if msg := strings.ToLower(errString(err)); err == nil ||
			!(strings.Contains(msg, "unauthorized") || strings.Contains(msg, "denied")) {
			t.Fatalf("anonymous pull: %v, want an unauthorized/denied error", err)
		}
		t.Logf("refused: %v", err)
		// The refusal came from the registry: the token server handed out
		// tokens, none of them granting anything.
		grants := reg.Token.Grants()[n:]
		if len(grants) == 0 {
			t.Fatal("the anonymous pull asked for no token")
		}
		for _, g := range grants {
			if g.User != "" || len(g.Access) != 0 {
				t.Fatalf("anonymous pull was granted %+v", g)
			}
		}
		noBundle(t, bundle)
	})

	t.Run("wrong password", func(t *testing.T) {
		n, refused := len(reg.Token.Grants()), reg.Token.Refused()
		bundle, _, _, err := pull(t, "kbs:///default/credential/wrong")
		if msg := strings.ToLower(errString(err)); err == nil ||
			!(strings.Contains(msg, "unauthorized") || strings.Contains(msg, "denied")) {
			t.Fatalf("pull with a wrong password: %v, want an unauthorized/denied error", err)
		}
		t.Logf("refused: %v", err)
		// The token server refused the credentials and issued nothing.
		if reg.Token.Refused() == refused || len(reg.Token.Grants()) != n {
			t.Fatalf("token server: refused %d -> %d, grants %+v", refused, reg.Token.Refused(), reg.Token.Grants()[n:])
		}
		noBundle(t, bundle)
	})

	t.Run("with credentials", func(t *testing.T) {
		n := len(reg.Token.Grants())
		bundle, p, d, err := pull(t, "kbs:///default/credential/token")
		if err != nil {
			t.Fatal(err)
		}
		if d != ref.Digest {
			p.Remove(context.Background(), bundle)
			t.Fatalf("Pull = %s, want %s", d, ref.Digest)
		}
		removed := false
		defer func() {
			if !removed {
				p.Remove(context.Background(), bundle)
			}
		}()
		checkRootfs(t, filepath.Join(bundle, "rootfs"))
		// It really went through the token flow, as alice, with pull on
		// the repository.
		pulled := false
		for _, g := range reg.Token.Grants()[n:] {
			if g.User != "alice" {
				t.Fatalf("grant %+v during alice's pull", g)
			}
			for _, a := range g.Access {
				pulled = pulled || (a.Type == "repository" && a.Name == "priv/busybox" && slices.Contains(a.Actions, "pull"))
			}
		}
		if !pulled {
			t.Fatalf("no pull token for priv/busybox was issued: %+v", reg.Token.Grants()[n:])
		}
		removed = true
		if err := p.Remove(context.Background(), bundle); err != nil {
			t.Fatal(err)
		}
		noBundle(t, bundle)
	})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
