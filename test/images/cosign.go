package images

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// CosignVersion is the cosign release tests sign with. v2 writes the
	// sha256-<hex>.sig tag containers/image reads; v3 writes sigstore
	// bundles as OCI referrers by default.
	CosignVersion = "v2.6.5"
	// cosignModule is what `go install` builds.
	cosignModule = "github.com/sigstore/cosign/v2/cmd/cosign@" + CosignVersion
	// CosignEnv names an environment variable holding a cosign binary to
	// use instead of the cached build.
	CosignEnv = "GUESTD_COSIGN"
	// cosignPassword protects the throwaway cosign keys.
	cosignPassword = "guestd-test"
)

// Cosign returns the path of a cosign v2 binary: $GUESTD_COSIGN if set,
// else <repo root>/.cache/bin/cosign (with its version stamp
// cosign.version), which test/scripts/deps.sh (run by make test) builds.
// When that is missing or stale, Cosign builds it with
// `go install` (GOBIN=.cache/bin), which takes 2-5 minutes with cold Go
// caches on 2 cores (about 10 s warm) and a few GB of module and build
// cache; concurrent test binaries serialize on a lock file and build once.
func Cosign(t testing.TB) string {
	t.Helper()
	if p := os.Getenv(CosignEnv); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("$%s=%s: %v", CosignEnv, p, err)
		}
		return p
	}
	root, err := repoRoot()
	if err != nil {
		t.Fatalf("find cosign: %v", err)
	}
	bin := filepath.Join(root, ".cache", "bin", "cosign")
	if cosignCurrent(bin) {
		return bin
	}
	if err := buildCosign(t, bin); err != nil {
		t.Fatalf("build cosign %s (or run test/scripts/deps.sh, or set $%s): %v", CosignVersion, CosignEnv, err)
	}
	return bin
}

// cosignCurrent reports whether bin exists and its version stamp
// (bin.version, written by deps.sh and buildCosign) is CosignVersion.
func cosignCurrent(bin string) bool {
	if _, err := os.Stat(bin); err != nil {
		return false
	}
	stamp, err := os.ReadFile(bin + ".version")
	return err == nil && strings.TrimSpace(string(stamp)) == CosignVersion
}

// buildCosign go-installs cosign into bin's directory under an exclusive
// lock (the one deps.sh takes), unless another process built it meanwhile.
func buildCosign(t testing.TB, bin string) error {
	dir := filepath.Dir(bin)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".cosign.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("open build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if cosignCurrent(bin) {
		return nil
	}
	gobin, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(gobin)
	t.Logf("building cosign %s into %s (first time only: 2-5 min with cold Go caches)", CosignVersion, bin)
	start := time.Now()
	cmd := exec.Command("go", "install", cosignModule)
	cmd.Dir = gobin // outside any module: go install pkg@version needs none
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install %s: %w\n%s", cosignModule, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, "cosign"), bin); err != nil {
		return fmt.Errorf("install cosign: %w", err)
	}
	if err := os.WriteFile(bin+".version", []byte(CosignVersion+"\n"), 0o644); err != nil {
		return fmt.Errorf("stamp cosign version: %w", err)
	}
	t.Logf("built cosign in %s", time.Since(start).Round(time.Second))
	return nil
}

// repoRoot finds the directory of the guestd go.mod above the working
// directory (a package directory, under go test).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(bytes.TrimSpace(data), []byte("module github.com/guestd/guestd\n")) {
			return dir, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("read go.mod in %s: %w", dir, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of github.com/guestd/guestd above the working directory")
		}
		dir = parent
	}
}

// CosignKeyPair returns the paths of cosign.key and cosign.pub in keyDir,
// generating the pair (cosign generate-key-pair) if keyDir has none yet.
func CosignKeyPair(t testing.TB, keyDir string) (key, pub string) {
	t.Helper()
	key, pub = filepath.Join(keyDir, "cosign.key"), filepath.Join(keyDir, "cosign.pub")
	if _, err := os.Stat(key); err == nil {
		return key, pub
	}
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		t.Fatalf("create cosign key dir %s: %v", keyDir, err)
	}
	cosign(t, keyDir, nil, "generate-key-pair")
	return key, pub
}

// CosignSign signs ref (by digest) with the key pair in keyDir, generating
// it on first use, with cosign sign --tlog-upload=false: the signature is
// pushed as the sha256-<hex>.sig tag of ref's repository, through ref's
// target with its CA and credentials. It returns the public key PEM.
func CosignSign(t testing.TB, keyDir string, ref Ref) []byte {
	t.Helper()
	key, pub := CosignKeyPair(t, keyDir)
	args := append([]string{"sign", "--key", key, "--tlog-upload=false", "--yes"}, cosignRegistryFlags(ref)...)
	cosign(t, "", cosignEnv(ref), append(args, ref.Digested())...)
	pem, err := os.ReadFile(pub)
	if err != nil {
		t.Fatalf("read cosign public key %s: %v", pub, err)
	}
	return pem
}

// CosignVerify runs cosign verify of ref (by digest) against the public
// key file pub, without a transparency log, and returns its stdout (the
// verified payloads) or an error with cosign's output.
func CosignVerify(t testing.TB, pub string, ref Ref) ([]byte, error) {
	t.Helper()
	args := append([]string{"verify", "--key", pub, "--insecure-ignore-tlog=true"}, cosignRegistryFlags(ref)...)
	return runCosign(t, "", cosignEnv(ref), append(args, ref.Digested())...)
}

// cosignRegistryFlags returns the flags that let cosign reach ref's target.
func cosignRegistryFlags(ref Ref) []string {
	e := ref.Target.Addr()
	f := []string{"--allow-insecure-registry", "--allow-http-registry"}
	if e.User != "" {
		f = append(f, "--registry-username", e.User, "--registry-password", e.Password)
	}
	return f
}

// cosignEnv returns the environment that makes cosign trust ref's CA.
func cosignEnv(ref Ref) []string {
	if e := ref.Target.Addr(); e.CAFile != "" {
		return []string{"SSL_CERT_FILE=" + e.CAFile}
	}
	return nil
}

// cosign runs cosign and fails the test on error.
func cosign(t testing.TB, dir string, env []string, args ...string) []byte {
	t.Helper()
	out, err := runCosign(t, dir, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runCosign runs the cosign binary in dir with the key password, a private
// TUF cache and docker config (so the machine's never leak in), and env.
func runCosign(t testing.TB, dir string, env []string, args ...string) ([]byte, error) {
	t.Helper()
	bin := Cosign(t)
	home := shortTempDir(t, "cosign")
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"COSIGN_PASSWORD="+cosignPassword,
		"TUF_ROOT="+filepath.Join(home, "tuf"),
		"DOCKER_CONFIG="+filepath.Join(home, "docker"),
		"SIGSTORE_NO_CACHE=true",
	)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("cosign %s: %w\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}
