package images

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/guestd/guestd/test/registry"
	digest "github.com/opencontainers/go-digest"
)

// gpgHint is the command that installs gpg and its agent.
const gpgHint = "apt-get install -y gnupg"

// GPG is a throwaway GPG signing key.
type GPG struct {
	// Home is the GNUPGHOME holding the key (no passphrase).
	Home string
	// Fingerprint identifies the key (for skopeo --sign-by).
	Fingerprint string
	// PubRing is a file holding the exported public key (binary keyring),
	// for a signedBy policy's keyPath.
	PubRing string
	// PubKey is the ASCII-armored public key, for a signedBy keyData.
	PubKey []byte
}

// GPGKey creates an RSA-2048 signing key without passphrase in a new
// GNUPGHOME (gpg --batch --passphrase "" --quick-gen-key), exports its
// public keyring, and stops that home's gpg-agent when the test ends.
func GPGKey(t testing.TB) *GPG {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Fatalf("gpg is not installed (%v); install it with: %s", err, gpgHint)
	}
	// The agent's socket lives in GNUPGHOME when /run/user/<uid> does not
	// exist, so the path must be short.
	home := shortTempDir(t, "gnupg")
	if err := os.Chmod(home, 0o700); err != nil {
		t.Fatalf("chmod GNUPGHOME %s: %v", home, err)
	}
	g := &GPG{Home: home, PubRing: filepath.Join(home, "pubring-export.gpg")}
	// Registered after shortTempDir's removal, so it runs before it.
	t.Cleanup(func() {
		// Stops the agent serving this GNUPGHOME only (through its socket).
		cmd := exec.Command("gpgconf", "--kill", "gpg-agent")
		cmd.Env = append(os.Environ(), "GNUPGHOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Logf("stop gpg-agent of %s: %v: %s", home, err, out)
		}
	})
	g.gpg(t, "--passphrase", "", "--quick-gen-key", "guestd test key <test@guestd.invalid>", "rsa2048", "sign", "never")
	for _, line := range strings.Split(string(g.gpg(t, "--with-colons", "--list-secret-keys")), "\n") {
		if f := strings.Split(line, ":"); len(f) > 9 && f[0] == "fpr" {
			g.Fingerprint = f[9]
			break
		}
	}
	if g.Fingerprint == "" {
		t.Fatalf("gpg: no fingerprint for the key generated in %s", home)
	}
	writeFile(t, g.PubRing, g.gpg(t, "--export", g.Fingerprint))
	g.PubKey = g.gpg(t, "--armor", "--export", g.Fingerprint)
	return g
}

// gpg runs gpg --batch in g's home and returns its stdout.
func (g *GPG) gpg(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("gpg", append([]string{"--batch", "--no-tty", "--pinentry-mode", "loopback"}, args...)...)
	cmd.Env = append(os.Environ(), "GNUPGHOME="+g.Home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gpg %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes()
}

// SkopeoSign copies src (any skopeo source, e.g. "oci:DIR:TAG" or a Ref's
// Docker()) to repoTag in the registry at to with skopeo copy --sign-by,
// storing the GPG simple signing signature under lookasideDir through a
// registries.d lookaside-staging file:// URL. A docker:// source on the
// same host is read with the target's credentials. extra are more skopeo
// copy flags (e.g. --all). It fails the test unless the signature file
// <lookasideDir>/<repo>@sha256=<hex>/signature-1 exists afterwards.
func SkopeoSign(t testing.TB, key *GPG, src string, to registry.Target, repoTag, lookasideDir string, extra ...string) Ref {
	t.Helper()
	repo, tag := splitRepoTag(repoTag)
	ref := Ref{Target: to, Repo: repo, Tag: tag}
	work := shortTempDir(t, "sign")
	regD := filepath.Join(work, "registries.d")
	if err := os.Mkdir(regD, 0o755); err != nil {
		t.Fatalf("create %s: %v", regD, err)
	}
	writeFile(t, filepath.Join(regD, "staging.yaml"), stagingYAML(lookasideDir))
	digestFile := filepath.Join(work, "digest")
	args := []string{"--registries.d", regD, "copy", "--quiet", "--preserve-digests",
		"--digestfile", digestFile, "--sign-by", key.Fingerprint}
	args = append(args, extra...)
	if strings.HasPrefix(src, "docker://"+to.Addr().Host+"/") {
		args = append(args, to.Addr().SkopeoFlags("src")...)
	}
	args = append(args, to.Addr().SkopeoFlags("dest")...)
	args = append(args, src, ref.Docker())
	if _, err := runSkopeo(t, []string{"GNUPGHOME=" + key.Home}, args...); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatalf("sign %s: read skopeo digest file: %v", ref, err)
	}
	ref.Digest = digest.Digest(strings.TrimSpace(string(got)))
	if err := ref.Digest.Validate(); err != nil {
		t.Fatalf("sign %s: skopeo digest file: %v", ref, err)
	}
	if _, err := os.Stat(SignaturePath(lookasideDir, ref, 1)); err != nil {
		t.Fatalf("sign %s: no signature in the lookaside: %v", ref, err)
	}
	return ref
}

// PushSigned pushes a to repoTag like Push, signing it with key into
// lookasideDir like SkopeoSign.
func PushSigned(t testing.TB, a Artifact, to registry.Target, repoTag string, key *GPG, lookasideDir string) Ref {
	t.Helper()
	desc, err := a.Descriptor()
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	src, extra := skopeoSource(t, a, desc)
	ref := SkopeoSign(t, key, src, to, repoTag, lookasideDir, extra...)
	if ref.Digest != desc.Digest {
		t.Fatalf("push %s: skopeo pushed digest %s, want %s", ref, ref.Digest, desc.Digest)
	}
	return ref
}

// SignaturePath returns where the n-th (from 1) lookaside signature of ref
// lives under dir: <dir>/<repo>@sha256=<hex>/signature-<n>.
func SignaturePath(dir string, ref Ref, n int) string {
	return filepath.Join(dir, filepath.FromSlash(ref.Repo)+"@"+ref.Digest.Algorithm().String()+"="+ref.Digest.Encoded(),
		"signature-"+strconv.Itoa(n))
}
