package detect

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func touch(t *testing.T, root, p, content string) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPresent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // TEEs present besides sample
	}{
		{"bare", nil, nil},
		{"tdx device", map[string]string{"/dev/tdx_guest": ""}, []string{"tdx"}},
		{"tdx cpu flag", map[string]string{"/proc/cpuinfo": "processor\t: 0\nflags\t\t: fpu tdx_guest sse\n"}, []string{"tdx"}},
		{"no tdx flag", map[string]string{"/proc/cpuinfo": "flags\t\t: fpu tdx_guestx sse\n"}, nil},
		{"snp platform", map[string]string{"/sys/devices/platform/sev-guest/x": ""}, []string{"snp"}},
		{"snp device", map[string]string{"/dev/sev-guest": ""}, []string{"snp"}},
		{"tpm", map[string]string{"/dev/tpmrm0": ""}, []string{"tpm"}},
		{"snp with vtpm", map[string]string{"/dev/sev-guest": "", "/dev/tpm0": ""}, []string{"snp", "tpm"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			for p, c := range tc.files {
				touch(t, root, p, c)
			}
			opts := Options{Root: root}
			var got []string
			for _, n := range order {
				if Present(n, opts) {
					got = append(got, n)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("present = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestDetectFallsBackToSample(t *testing.T) {
	a, err := Detect(context.Background(), Options{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if a.Tee() != "sample" {
		t.Fatalf("Tee() = %q, want sample", a.Tee())
	}
}

// A TEE that is present but cannot be opened is an error, never a silent
// fallback to the sample attester.
func TestDetectDoesNotHideBrokenTEE(t *testing.T) {
	root := t.TempDir()
	opts := Options{Root: root}
	opts.TPM.Device = filepath.Join(root, "no-such-tpm")
	if _, err := Detect(context.Background(), opts); err == nil || !strings.Contains(err.Error(), "tpm") {
		t.Fatalf("Detect error = %v, want a tpm error", err)
	}
}

func TestNewUnknown(t *testing.T) {
	_, err := New(context.Background(), "sgx", Options{})
	if err == nil || !strings.Contains(err.Error(), `"sgx"`) {
		t.Fatalf("New(sgx) error = %v", err)
	}
}
