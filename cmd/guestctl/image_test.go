package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocikp "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/guestd/guestd/test/images"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
	"github.com/guestd/guestd/test/registry"
)

// adminKeyFile writes an Ed25519 admin key as PKCS#8 PEM, as openssl does.
func adminKeyFile(t *testing.T) (ed25519.PublicKey, string) {
	t.Helper()
	pub, priv := kbstest.NewAdminKey(t)
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "admin.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return pub, path
}

// TestPullThroughGuestctl: the tenant encrypts with `guestctl image
// encrypt`, the guest pulls with `guestctl pull` (policy and KEK from the
// KBS), then `guestctl rm`.
func TestPullThroughGuestctl(t *testing.T) {
	pub, keyPath := adminKeyFile(t)
	repoDir := t.TempDir()
	k := kbstest.Start(t, testkbs.Config{RepoDir: repoDir, Policy: testkbs.AllowAll(), AdminKey: pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	reg := registry.Start(t, registry.Options{})
	img := images.Image{Layers: []images.Layer{
		images.NewLayer(t, images.Gzip, images.File("etc/app.conf", "secret config")),
		images.NewLayer(t, images.Zstd, images.File("bin/app", "#!/bin/sh\necho hi\n").WithMode(0o755)),
	}, Config: images.Config{Entrypoint: []string{"/bin/app"}}}
	images.Push(t, img, reg, "tenant/app:1")

	_, errOut, code := exe(t, nil, "image", "encrypt", "--kbs", k.URL, "--admin-key", keyPath, "--key-id", "kbs:///default/key/app",
		"--insecure", "docker://"+reg.Host+"/tenant/app:1", "docker://"+reg.Host+"/tenant/app:enc")
	if code != 0 {
		t.Fatalf("image encrypt: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(repoDir, "default", "key", "app")); err != nil {
		t.Fatalf("KEK not registered in the KBS: %v", err)
	}
	policy := filepath.Join(repoDir, "default", "security-policy", "test")
	if err := os.MkdirAll(filepath.Dir(policy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	work, bundle := t.TempDir(), t.TempDir()
	out, errOut, code := exe(t, nil, "pull", "--kbs", k.URL, "--tee", "sample", "--policy", "kbs:///default/security-policy/test",
		"--require-policy", "--insecure-registry", reg.Host, "--work-dir", work, reg.Host+"/tenant/app:enc", bundle)
	if code != 0 {
		t.Fatalf("pull: exit %d: %s", code, errOut)
	}
	if !strings.HasPrefix(strings.TrimSpace(out), "sha256:") {
		t.Fatalf("pull printed %q, want the manifest digest", out)
	}
	got, err := os.ReadFile(filepath.Join(bundle, "rootfs", "etc", "app.conf"))
	if err != nil || string(got) != "secret config" {
		t.Fatalf("rootfs etc/app.conf = %q, %v", got, err)
	}
	var spec struct {
		Process struct{ Args []string } `json:"process"`
	}
	data, _ := os.ReadFile(filepath.Join(bundle, "config.json"))
	if json.Unmarshal(data, &spec) != nil || len(spec.Process.Args) != 1 || spec.Process.Args[0] != "/bin/app" {
		t.Fatalf("config.json args: %s", data)
	}
	if _, errOut, code := exe(t, nil, "rm", "--work-dir", work, bundle); code != 0 {
		t.Fatalf("rm: exit %d: %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(bundle, "rootfs", "etc", "app.conf")); err == nil {
		t.Fatal("rm left the rootfs mounted")
	}

	// A refused image: the reason is on stderr, nothing is left.
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"reject"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	bundle2 := t.TempDir()
	_, errOut, code = exe(t, nil, "pull", "--kbs", k.URL, "--tee", "sample", "--policy", "kbs:///default/security-policy/test",
		"--insecure-registry", reg.Host, "--work-dir", work, reg.Host+"/tenant/app:enc", bundle2)
	if code != 1 || !strings.Contains(errOut, "rejected") {
		t.Fatalf("refused pull: exit %d, stderr %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(bundle2, "config.json")); err == nil {
		t.Fatal("a refused pull left config.json")
	}
}

// TestKeyproviderServe runs `guestctl keyprovider serve` and calls WrapKey
// over gRPC as ocicrypt does; the KEK lands in the KBS.
func TestKeyproviderServe(t *testing.T) {
	pub, keyPath := adminKeyFile(t)
	repoDir := t.TempDir()
	k := kbstest.Start(t, testkbs.Config{RepoDir: repoDir, Policy: testkbs.AllowAll(), AdminKey: pub})
	sockDir, err := os.MkdirTemp("", "kp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	sock := filepath.Join(sockDir, "kp.sock")
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, guestctlBin, "keyprovider", "serve", "--listen", "unix://"+sock, "--kbs", k.URL, "--admin-key", keyPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keyprovider did not listen: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	param := base64.StdEncoding.EncodeToString([]byte("keyid=kbs:///default/key/kp"))
	in := `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["` + param + `"]}},"optsdata":"` +
		base64.StdEncoding.EncodeToString([]byte(`{"symkey":"AAAA"}`)) + `"}}`
	resp, err := ocikp.NewKeyProviderServiceClient(conn).WrapKey(context.Background(),
		&ocikp.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte(in)})
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Results struct{ Annotation []byte } `json:"keywrapresults"`
	}
	if err := json.Unmarshal(resp.KeyProviderKeyWrapProtocolOutput, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out.Results.Annotation), `"kid":"kbs:///default/key/kp"`) {
		t.Fatalf("annotation %s", out.Results.Annotation)
	}
	if kek, err := os.ReadFile(filepath.Join(repoDir, "default", "key", "kp")); err != nil || len(kek) != 32 {
		t.Fatalf("KEK in the KBS: %d bytes, %v", len(kek), err)
	}
}
