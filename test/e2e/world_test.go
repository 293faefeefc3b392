//go:build e2e

package e2e_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/test/guest"
	"github.com/guestd/guestd/test/images"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	tpmv "github.com/guestd/guestd/test/kbs/verifier/tpm"
	"github.com/guestd/guestd/test/registry"
	"github.com/guestd/guestd/test/swtpm"
)

// Guest-side ports of the host services (reached at guest.HostIP).
const (
	kbsGuestPort = 8080
	regGuestPort = 5000
)

// world is the host side: the KBS, the registry behind a recording proxy,
// the tenant's images and keys, and the TPM state the guest boots with.
type world struct {
	root     string // the test's temp root: every host file the test makes is under it
	kbs      *kbstest.Instance
	adminKey ed25519.PrivateKey
	reg      *registry.Registry
	proxy    *regProxy
	tpmState string
	relayLog string

	canary    string // only the decrypted seed image holds it
	canarySum string // sha256 of /canary.txt in that image
	bigLayer  digest.Digest
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{root: filepath.Dir(t.TempDir())}
	w.relayLog = filepath.Join(t.TempDir(), "relay.log")

	// The guest's TPM: provision the AK at the default persistent handle
	// on the host first (a cloud provider's vTPM AK is known the same
	// way), so the KBS can trust exactly this TPM.
	w.tpmState = t.TempDir()
	sw := swtpm.StartState(t, w.tpmState)
	akPEM := sw.ProvisionAK(t)
	if err := sw.Stop(); err != nil {
		t.Fatal(err)
	}
	v, err := tpmv.New(tpmv.Options{TrustedAKsPEM: akPEM})
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := kbstest.NewAdminKey(t)
	w.adminKey = priv
	w.kbs = kbstest.Start(t, testkbs.Config{
		RepoDir:   t.TempDir(),
		Policy:    testkbs.AllowAll(),
		AdminKey:  pub,
		Verifiers: map[string]testkbs.Verifier{"tpm": v},
	})

	w.reg = registry.Start(t, registry.Options{})
	w.proxy = startRegProxy(t, w.reg.URL)

	// 1. Unencrypted busybox, accepted by the policy without a signature.
	bb := images.Busybox(t)
	bb.Config.Cmd = []string{"/bin/sh", "-c", "echo hello from the unencrypted image; echo uid=$(id -u) host=$(hostname)"}
	images.Push(t, bb, w.reg, "e2e/busybox:1")

	// 2. The seed's workload: busybox plus a canary file, encrypted with
	// a KEK registered in the KBS and signed with cosign. The tenant's
	// plaintext layout lives outside the test's dirs and is deleted once
	// encrypted, so no host file holds the canary.
	w.canary = "guestd-canary-" + randomHex(t, 24)
	sum := sha256.Sum256([]byte(w.canary + "\n"))
	w.canarySum = hex.EncodeToString(sum[:])
	seed := images.Busybox(t)
	seed.Layers = append(seed.Layers, images.NewLayer(t, images.Uncompressed, images.File("canary.txt", w.canary+"\n")))
	seed.Config.Cmd = []string{"/bin/sh", "-c", "echo seed workload running; sha256sum /canary.txt"}
	tenant, err := os.MkdirTemp("", "tenant")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(tenant)
	if err := images.WriteOCILayout(tenant, "1", seed); err != nil {
		t.Fatal(err)
	}
	// The tenant's tool: the guestctl binary `make build` made.
	guestctl := binary(t, "guestctl")
	adminKey := filepath.Join(tenant, "admin.pem")
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(adminKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"e2e/seed", "e2e/other", "e2e/unsigned"} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		out, err := exec.CommandContext(ctx, guestctl, "image", "encrypt", "--kbs", w.kbs.URL, "--admin-key", adminKey,
			"--key-id", "kbs:///default/image-kek/"+strings.TrimPrefix(repo, "e2e/"), "--insecure",
			"oci:"+tenant+":1", "docker://"+w.reg.Host+"/"+repo+":1").CombinedOutput()
		cancel()
		if err != nil {
			t.Fatalf("guestctl image encrypt %s: %v\n%s", repo, err, out)
		}
	}
	if err := os.RemoveAll(tenant); err != nil {
		t.Fatal(err)
	}
	cosignPub := images.CosignSign(t, t.TempDir(), w.ref(t, "e2e/seed"))
	images.CosignSign(t, t.TempDir(), w.ref(t, "e2e/other")) // another key

	// 5. A big image (one 48 MiB incompressible layer) for the restart.
	big := images.Big(t, 1, 48<<20)
	w.bigLayer = big.Layers[0].Digest
	images.Push(t, big, w.reg, "e2e/big:1")

	w.put(t, "kbs:///default/security-policy/test", []byte(w.policy()))
	w.put(t, "kbs:///default/cosign-key/1", cosignPub)
	w.put(t, "kbs:///default/storage-key/1", []byte(randomHex(t, 64)))
	return w
}

// binary is bin/NAME at the repository root (make build).
func binary(t *testing.T, name string) string {
	t.Helper()
	dir, err := guest.ImageDir()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(filepath.Dir(dir), name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%v (build it with: make build)", err)
	}
	return p
}

// name is how the tenant and the guest name an image: the registry's
// loopback address, which the guest's registry configuration maps to the
// forwarded route (cosign signed that name).
func (w *world) name(repo string) string { return w.reg.Host + "/" + repo + ":1" }

// policy is the image security policy: the seed's sigstoreSigned rule with
// the cosign key from the KBS for the encrypted repositories, anything for
// the unencrypted and the big image, reject otherwise.
func (w *world) policy() string {
	signed := `[{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign-key/1", "signedIdentity": {"type": "matchRepository"}}]`
	any := `[{"type": "insecureAcceptAnything"}]`
	return fmt.Sprintf(`{
  "default": [{"type": "reject"}],
  "transports": {"docker": {
    "%[1]s/e2e/busybox": %[3]s,
    "%[1]s/e2e/big": %[3]s,
    "%[1]s/e2e/seed": %[2]s,
    "%[1]s/e2e/other": %[2]s,
    "%[1]s/e2e/unsigned": %[2]s
  }}
}`, w.reg.Host, signed, any)
}

// initdata is the document kata hands the guest: the data hub's config
// (KBS, policy, and the registry's route) in cdh.toml. The attestation
// agent has no aa.toml and reads agent.aa_kbc_params from the kernel
// command line.
func (w *world) initdata() []byte {
	kbsURL := fmt.Sprintf("http://%s:%d", guest.HostIP, kbsGuestPort)
	cdh := fmt.Sprintf(`socket = "unix:///run/confidential-containers/cdh.sock"

[kbc]
name = "cc_kbc"
url = %q

[image]
image_security_policy_uri = "kbs:///default/security-policy/test"

[[image.registry_config.registry]]
prefix = %q
location = "%s:%d"
insecure = true
`, kbsURL, w.reg.Host, guest.HostIP, regGuestPort)
	return []byte(fmt.Sprintf("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"cdh.toml\" = '''\n%s'''\n", cdh))
}

// cmdline is the seed's configuration step on the kernel command line.
func (w *world) cmdline() []string {
	return []string{fmt.Sprintf("agent.aa_kbc_params=cc_kbc::http://%s:%d", guest.HostIP, kbsGuestPort)}
}

// forwards are the guest's only routes out: the KBS and the registry.
func (w *world) forwards() []guest.Forward {
	return []guest.Forward{
		{GuestPort: kbsGuestPort, Target: strings.TrimPrefix(w.kbs.URL, "http://")},
		{GuestPort: regGuestPort, Target: w.proxy.addr},
	}
}

func (w *world) put(t *testing.T, uri string, data []byte) {
	t.Helper()
	w.kbs.SetResource(t, w.adminKey, uri, data)
}

// ref is repo:1 in the registry, by digest.
func (w *world) ref(t *testing.T, repo string) images.Ref {
	t.Helper()
	return images.Ref{Target: w.reg, Repo: repo, Tag: "1", Digest: images.ManifestDigest(t, w.reg, repo, "1")}
}

// manifestBlobs lists the config and layer digests of repo:1.
func (w *world) manifestBlobs(t *testing.T, repo string) []string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.reg.URL+"/v2/"+repo+"/manifests/1", nil)
	req.Header.Set("Accept", ocispec.MediaTypeImageManifest)
	resp, err := w.reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("manifest of %s: %v", repo, err)
	}
	out := []string{m.Config.Digest.String()}
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

// findCanary walks every file under the host dirs and returns those that
// contain the canary.
func findCanary(t *testing.T, canary string, dirs ...string) (hits []string, files int) {
	t.Helper()
	needle := []byte(canary)
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			files++
			if fileContains(p, needle) {
				hits = append(hits, p)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return hits, files
}

// fileContains searches p for needle in chunks, with an overlap so a match
// across chunk boundaries is found.
func fileContains(p string, needle []byte) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	buf := make([]byte, 1<<20+len(needle))
	keep := 0
	for {
		n, err := f.Read(buf[keep:])
		if bytes.Contains(buf[:keep+n], needle) {
			return true
		}
		if err != nil {
			return false
		}
		total := keep + n
		keep = min(len(needle)-1, total)
		copy(buf, buf[total-keep:total])
	}
}

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
