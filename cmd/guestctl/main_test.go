package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/detect"
	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/attester/tdx"
	"github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
	snpv "github.com/guestd/guestd/test/kbs/verifier/snp"
	tdxv "github.com/guestd/guestd/test/kbs/verifier/tdx"
	tpmv "github.com/guestd/guestd/test/kbs/verifier/tpm"
	"github.com/guestd/guestd/test/swtpm"
	"github.com/guestd/guestd/test/tee/snpfake"
	"github.com/guestd/guestd/test/tee/tdxfake"
)

// guestctlBin is the production guestctl binary, built once by TestMain
// exactly as `make build` builds it.
var guestctlBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "guestctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	guestctlBin = filepath.Join(dir, "guestctl")
	build := exec.Command("go", "build", "-trimpath", "-tags", "containers_image_openpgp", "-o", guestctlBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build guestctl: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

const secret = "the-kek-0123456789abcdef01234567"

func repo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "default", "key", "1")
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(secret), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// kbsFor starts a test KBS that releases default/key/1 to tee and verifies
// its evidence with v.
func kbsFor(t *testing.T, tee string, v kbs.Verifier) *kbstest.Instance {
	t.Helper()
	policy, err := kbs.NewPolicy(false, kbs.Rule{Tee: tee, Resource: "default/*/*", Allow: true})
	if err != nil {
		t.Fatal(err)
	}
	return kbstest.Start(t, kbs.Config{
		RepoDir:   repo(t),
		Policy:    policy,
		Verifiers: map[string]kbs.Verifier{tee: v},
	})
}

// exe runs the built guestctl binary.
func exe(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, guestctlBin, args...)
	cmd.Env = append(os.Environ(), env...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("run guestctl: %v", err)
		}
		code = ee.ExitCode()
	}
	return o.String(), e.String(), code
}

// inproc runs guestctl's run() with an attester factory that serves the
// given attester for its TEE name: the seam for the simulated SNP and TDX
// hardware, which cannot be reached from outside the process.
func inproc(t *testing.T, a attester.Attester, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	env := defaultEnv()
	env.stdout, env.stderr = &o, &e
	env.newAttester = func(ctx context.Context, name string, opts detect.Options) (attester.Attester, error) {
		if name != a.Tee() {
			return nil, fmt.Errorf("test provides only %s, asked for %q", a.Tee(), name)
		}
		return a, nil
	}
	code = run(context.Background(), args, env)
	return o.String(), e.String(), code
}

func TestSampleEndToEnd(t *testing.T) {
	k := kbsFor(t, "sample", samplev.New())
	t.Run("get-resource stdout", func(t *testing.T) {
		out, errOut, code := exe(t, nil, "get-resource", "--kbs", k.URL, "--tee", "sample", "kbs:///default/key/1")
		if code != 0 || out != secret {
			t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
		}
	})
	t.Run("get-resource -o", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "kek")
		_, errOut, code := exe(t, nil, "get-resource", "--kbs", k.URL, "--tee", "sample", "-o", file, "kbs:///default/key/1")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		got, err := os.ReadFile(file)
		if err != nil || string(got) != secret {
			t.Fatalf("file %q, %v", got, err)
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o600 {
			t.Fatalf("resource file mode %v, want 0600", fi.Mode().Perm())
		}
	})
	t.Run("attest", func(t *testing.T) {
		out, errOut, code := exe(t, nil, "attest", "--kbs", k.URL, "--tee", "sample")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var claims map[string]any
		if err := json.Unmarshal([]byte(out), &claims); err != nil {
			t.Fatalf("claims are not JSON: %v\n%s", err, out)
		}
		if claims["exp"] == nil || !strings.Contains(out, "runtime_data_claims") {
			t.Fatalf("claims lack exp or runtime data claims:\n%s", out)
		}
	})
	t.Run("evidence", func(t *testing.T) {
		out, errOut, code := exe(t, nil, "evidence", "--tee", "sample", "--runtime-data", "hello")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var ev struct {
			ReportData string `json:"report_data"`
		}
		if err := json.Unmarshal([]byte(out), &ev); err != nil || ev.ReportData != "aGVsbG8=" {
			t.Fatalf("evidence %s (%v)", out, err)
		}
	})
	t.Run("kernel command line", func(t *testing.T) {
		cmdline := filepath.Join(t.TempDir(), "cmdline")
		line := "console=ttyS0 agent.log=debug agent.aa_kbc_params=cc_kbc::" + k.URL + " quiet\n"
		if err := os.WriteFile(cmdline, []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
		out, errOut, code := exe(t, nil, "get-resource", "--cmdline", cmdline, "--tee", "sample", "kbs:///default/key/1")
		if code != 0 || out != secret {
			t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
		}
		// AA_KBC_PARAMS in the environment wins over the command line.
		_, errOut, code = exe(t, []string{"AA_KBC_PARAMS=cc_kbc::http://127.0.0.1:1"}, "get-resource",
			"--cmdline", cmdline, "--tee", "sample", "--timeout", "1s", "kbs:///default/key/1")
		if code != 1 || !strings.Contains(errOut, "127.0.0.1:1") {
			t.Fatalf("exit %d, stderr %s: AA_KBC_PARAMS did not win", code, errOut)
		}
	})
}

func TestOfflineFSFromCmdline(t *testing.T) {
	dir := t.TempDir()
	res := filepath.Join(dir, "resources.json")
	if err := os.WriteFile(res, []byte(`{"default/key/1":"c2VjcmV0"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cmdline := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(cmdline, []byte("agent.aa_kbc_params=offline_fs_kbc::null"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := exe(t, []string{"OFFLINE_FS_KBC_EXTRA_FILE_PATH=" + res}, "get-resource", "--cmdline", cmdline, "kbs:///default/key/1")
	if code != 0 || out != "secret" {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}

func TestSNPEndToEnd(t *testing.T) {
	fake, err := snpfake.New(snpfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := snpv.New(snpv.Options{RootsPEM: fake.RootsPEM(), Product: fake.ProductLine()})
	if err != nil {
		t.Fatal(err)
	}
	k := kbsFor(t, "snp", v)
	a := snp.New(fake)
	out, errOut, code := inproc(t, a, "get-resource", "--kbs", k.URL, "--tee", "snp", "kbs:///default/key/1")
	if code != 0 || out != secret {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	out, errOut, code = inproc(t, a, "attest", "--kbs", k.URL, "--tee", "snp")
	if code != 0 || !strings.Contains(out, `"measurement"`) {
		t.Fatalf("exit %d, stderr %s, claims:\n%s", code, errOut, out)
	}
	// A KBS that trusts only AMD's real roots refuses the simulated chip.
	vReal, err := snpv.New(snpv.Options{RootsPEM: trust.AskArkMilanVcekBytes, Product: "Milan"})
	if err != nil {
		t.Fatal(err)
	}
	kReal := kbsFor(t, "snp", vReal)
	_, errOut, code = inproc(t, a, "get-resource", "--kbs", kReal.URL, "--tee", "snp", "kbs:///default/key/1")
	if code != 1 || !strings.Contains(errOut, "unknown authority") {
		t.Fatalf("exit %d, stderr %s: want a certificate error", code, errOut)
	}
}

func TestTDXEndToEnd(t *testing.T) {
	fake, err := tdxfake.New(tdxfake.Options{})
	if err != nil {
		t.Fatal(err)
	}
	v, err := tdxv.New(tdxv.Options{RootPEM: fake.RootPEM()})
	if err != nil {
		t.Fatal(err)
	}
	k := kbsFor(t, "tdx", v)
	a := tdx.New(fake, tdx.Options{CCELPath: filepath.Join(t.TempDir(), "no-ccel")})
	out, errOut, code := inproc(t, a, "get-resource", "--kbs", k.URL, "--tee", "tdx", "kbs:///default/key/1")
	if code != 0 || out != secret {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	out, errOut, code = inproc(t, a, "evidence", "--tee", "tdx", "--runtime-data", "x")
	if code != 0 || !strings.Contains(out, `"quote"`) || !strings.Contains(out, `"cc_eventlog": null`) {
		t.Fatalf("exit %d, stderr %s, evidence:\n%s", code, errOut, out)
	}
}

// TestTPMEndToEnd runs the production binary against a real swtpm.
func TestTPMEndToEnd(t *testing.T) {
	sw := swtpm.Start(t)
	// The KBS trusts exactly this TPM's AK.
	akPEM := sw.ProvisionAK(t)
	v, err := tpmv.New(tpmv.Options{TrustedAKsPEM: akPEM})
	if err != nil {
		t.Fatal(err)
	}
	k := kbsFor(t, "tpm", v)
	out, errOut, code := exe(t, []string{"AA_TPM_DEVICE=" + sw.Device()}, "get-resource", "--kbs", k.URL, "--tee", "tpm", "kbs:///default/key/1")
	if code != 0 || out != secret {
		t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	// A KBS that trusts another AK refuses this TPM.
	other := swtpm.Start(t)
	otherPEM := other.ProvisionAK(t)
	vOther, err := tpmv.New(tpmv.Options{TrustedAKsPEM: otherPEM})
	if err != nil {
		t.Fatal(err)
	}
	kOther := kbsFor(t, "tpm", vOther)
	_, errOut, code = exe(t, nil, "get-resource", "--kbs", kOther.URL, "--tee", "tpm", "--tpm-device", sw.Device(), "kbs:///default/key/1")
	if code != 1 || !strings.Contains(errOut, "AK") {
		t.Fatalf("exit %d, stderr %s: want an untrusted-AK error", code, errOut)
	}
}

// TestFailures: guestctl exits non-zero and names the cause.
func TestFailures(t *testing.T) {
	k := kbsFor(t, "sample", samplev.New())
	deny := kbstest.Start(t, kbs.Config{RepoDir: repo(t), Policy: kbs.DenyAll(),
		Verifiers: map[string]kbs.Verifier{"sample": samplev.New()}})
	tlsKBS := kbstest.StartTLS(t, kbs.Config{RepoDir: repo(t), Policy: kbs.AllowAll(),
		Verifiers: map[string]kbs.Verifier{"sample": samplev.New()}})
	otherCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(otherCA, kbstest.StartTLS(t, kbs.Config{RepoDir: t.TempDir()}).CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	goodCA := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(goodCA, tlsKBS.CAPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"policy deny", []string{"get-resource", "--kbs", deny.URL, "--tee", "sample", "kbs:///default/key/1"}, 1, []string{"PolicyDeny"}},
		{"missing resource", []string{"get-resource", "--kbs", k.URL, "--tee", "sample", "kbs:///default/key/none"}, 1, []string{"default/key/none", "not found"}},
		{"not listening", []string{"get-resource", "--kbs", closed, "--tee", "sample", "--timeout", "1s", "kbs:///default/key/1"}, 1, []string{"kbs auth", "refused"}},
		{"wrong CA", []string{"get-resource", "--kbs", tlsKBS.URL, "--kbs-cert", otherCA, "--tee", "sample", "kbs:///default/key/1"}, 1, []string{"certificate"}},
		{"bad URI", []string{"get-resource", "--kbs", k.URL, "--tee", "sample", "kbs:///default/../x"}, 2, []string{"resource URI"}},
		{"unknown TEE", []string{"get-resource", "--kbs", k.URL, "--tee", "sgx", "kbs:///default/key/1"}, 1, []string{`"sgx"`}},
		{"bad key algorithm", []string{"attest", "--kbs", k.URL, "--tee-key-algorithm", "RSA1_5"}, 2, []string{"RSA1_5"}},
		{"unknown command", []string{"frobnicate"}, 2, []string{"unknown command"}},
		{"no command", nil, 2, []string{"usage"}},
		{"oversized runtime data", []string{"evidence", "--tee", "sample", "--runtime-data", strings.Repeat("x", 65)}, 1, []string{"65 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := exe(t, nil, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr %s", code, tc.code, errOut)
			}
			if out != "" {
				t.Errorf("failed run wrote to stdout: %q", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q does not contain %q", errOut, w)
				}
			}
		})
	}
	t.Run("good CA", func(t *testing.T) {
		out, errOut, code := exe(t, nil, "get-resource", "--kbs", tlsKBS.URL, "--kbs-cert", goodCA, "--tee", "sample", "kbs:///default/key/1")
		if code != 0 || out != secret {
			t.Fatalf("exit %d, stdout %q, stderr %s", code, out, errOut)
		}
	})
	t.Run("-o leaves nothing on failure", func(t *testing.T) {
		dir := t.TempDir()
		_, _, code := exe(t, nil, "get-resource", "--kbs", deny.URL, "--tee", "sample", "-o", filepath.Join(dir, "out"), "kbs:///default/key/1")
		entries, _ := os.ReadDir(dir)
		if code != 1 || len(entries) != 0 {
			t.Fatalf("exit %d, dir has %d entries", code, len(entries))
		}
	})
}

// TestNoTestCodeInBinaries: the production binaries link no test signer, no
// fake hardware and no testing package.
func TestNoTestCodeInBinaries(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "containers_image_openpgp", "-deps", "../guestctl", "../guestd").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		switch {
		case dep == "testing",
			strings.HasPrefix(dep, "github.com/guestd/guestd/test/"),
			strings.HasPrefix(dep, "github.com/google/go-sev-guest/testing"),
			strings.HasPrefix(dep, "github.com/google/go-tdx-guest/testing"),
			strings.HasPrefix(dep, "github.com/google/go-tpm-tools/simulator"):
			t.Errorf("production binary depends on %s", dep)
		}
	}
	if runtime.GOOS != "linux" {
		return
	}
	// And the built binary is static.
	data, err := os.ReadFile(guestctlBin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte("ld-linux")) {
		t.Error("guestctl is dynamically linked")
	}
}
