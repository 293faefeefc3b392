package main

import (
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/agent/config"
)

// repoRoot is where the Makefile is.
const repoRoot = "../.."

// TestMakeInstall runs `make install DESTDIR=… BIN=…` as a guest image
// build does and checks the tree: the static binary, kata's three names as
// relative symlinks to it, the systemd unit and the default config; then
// runs the installed binary under kata's names and `guestd check` on the
// installed config.
func TestMakeInstall(t *testing.T) {
	tests := []struct {
		name   string
		prefix string // "" for the Makefile's default
		bindir string
	}{
		{"default prefix", "", "/usr/local/bin"},
		{"prefix /usr", "/usr", "/usr/bin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dest, bin := t.TempDir(), t.TempDir()
			args := []string{"--no-print-directory", "-C", repoRoot, "install", "DESTDIR=" + dest, "BIN=" + bin}
			if tt.prefix != "" {
				args = append(args, "PREFIX="+tt.prefix)
			}
			cmd := exec.Command("make", args...)
			cmd.Env = withoutMake(os.Environ())
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("make install: %v\n%s", err, out)
			}

			binary := filepath.Join(dest, tt.bindir, "guestd")
			checkStaticExecutable(t, binary)
			for _, name := range []string{"attestation-agent", "confidential-data-hub", "api-server-rest"} {
				link := filepath.Join(dest, tt.bindir, name)
				target, err := os.Readlink(link)
				if err != nil || target != "guestd" {
					t.Errorf("%s: link to %q (%v), want the relative link guestd", name, target, err)
					continue
				}
				a, errA := os.Stat(link)
				b, errB := os.Stat(binary)
				if errA != nil || errB != nil || !os.SameFile(a, b) {
					t.Errorf("%s does not resolve to %s (%v, %v)", link, binary, errA, errB)
				}
			}
			checkUnit(t, filepath.Join(dest, "usr/lib/systemd/system/guestd.service"), tt.bindir)

			installed := filepath.Join(dest, "etc/guestd/guestd.toml")
			got, err := os.ReadFile(installed)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(distConfig)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s", installed, distConfig)
			}
			if fi, err := os.Stat(installed); err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("%s: mode %v (%v), want 0644", installed, fi.Mode(), err)
			}

			// The installed binary under kata's names takes upstream's
			// flags.
			for name, flags := range map[string][]string{
				"attestation-agent":     {"-attestation_sock", "-config-file", "-initdata-toml", "-initdata-digest", envGRPC, "GUESTD_TEE"},
				"confidential-data-hub": {"-c ", "-config", envGRPC},
				"api-server-rest":       {"-features", "-bind", "-aa_addr", "-cdh_addr"},
			} {
				out, err := exec.Command(filepath.Join(dest, tt.bindir, name), "--help").CombinedOutput()
				if err != nil {
					t.Errorf("%s --help: %v\n%s", name, err, out)
				}
				for _, f := range flags {
					if !bytes.Contains(out, []byte(f)) {
						t.Errorf("%s --help does not name %s:\n%s", name, f, out)
					}
				}
				if bytes.Contains(out, []byte("guestd serve")) {
					t.Errorf("%s --help is guestd's usage:\n%s", name, out)
				}
			}

			// guestd check accepts the installed config: kata's sockets,
			// REST on loopback, the KBS from agent.aa_kbc_params.
			cmdline := filepath.Join(t.TempDir(), "cmdline")
			if err := os.WriteFile(cmdline, []byte("console=hvc0 agent.aa_kbc_params=cc_kbc::http://10.0.2.2:8080\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			check := exec.Command(binary, "check", "--config", installed, "--cmdline", cmdline, "--tee", "sample")
			check.Stdout, check.Stderr = &stdout, &stderr
			if err := check.Run(); err != nil {
				t.Fatalf("guestd check --config %s: %v\n%s", installed, err, stderr.String())
			}
			var e effective
			if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if e.Config != installed || e.Serve.AttestationSock != config.DefaultAASocket || e.Serve.CDHSock != config.DefaultCDHSocket ||
				e.Serve.REST != "127.0.0.1:8006" || e.AA.TokenConfigs.KBS == nil || e.AA.TokenConfigs.KBS.URL != "http://10.0.2.2:8080" ||
				e.CDH.KBC.Name != config.KBCCC || e.CDH.KBC.URL != "http://10.0.2.2:8080" || e.AAFrom != config.KeyAAKbcParams {
				t.Errorf("guestd check of the installed config:\n%s", stdout.String())
			}
			if strings.Contains(stderr.String(), "unknown key") {
				t.Errorf("guestd check warns about the installed config:\n%s", stderr.String())
			}
		})
	}
}

// withoutMake drops the variables an outer make (make test) passes down,
// so that its command-line variables do not leak into the make under test.
func withoutMake(env []string) []string {
	var out []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// checkStaticExecutable checks that path is an executable, statically
// linked ELF file (no program interpreter, no dynamic section).
func checkStaticExecutable(t *testing.T, path string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o755 {
		t.Errorf("%s: mode %v, want a regular file 0755", path, fi.Mode())
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (%v)", path, p.Type)
		}
	}
}

// checkUnit checks guestd.service: how it starts and stops guestd, and that
// no option gives the service its own mount namespace or device policy,
// which would hide its mounts from kata-agent or its TEE and TPM devices
// from it, or forbids the setuid files image layers carry.
func checkUnit(t *testing.T, path, bindir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	keys := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "[") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Errorf("%s: %q is not KEY=VALUE", path, line)
			continue
		}
		keys[k] = v
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"Type":      "notify",
		"ExecStart": bindir + "/guestd serve --config " + config.DefaultGuestdConfig,
		"Restart":   "on-failure",
		"WantedBy":  "multi-user.target",
	} {
		if keys[k] != want {
			t.Errorf("%s: %s=%q, want %q", path, k, keys[k], want)
		}
	}
	for _, k := range []string{"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateMounts", "PrivateNetwork",
		"ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups", "ProtectClock", "ProtectProc",
		"ProcSubset", "ReadOnlyPaths", "ReadWritePaths", "InaccessiblePaths", "TemporaryFileSystem", "BindPaths", "BindReadOnlyPaths",
		"MountFlags", "RootDirectory", "RootImage", "DevicePolicy", "DeviceAllow", "RestrictSUIDSGID", "DynamicUser", "User"} {
		if v, ok := keys[k]; ok {
			t.Errorf("%s: %s=%s would break guestd's mounts or device access", path, k, v)
		}
	}
}
