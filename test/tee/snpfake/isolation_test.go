package snpfake_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestProductionDepsExcludeFakes checks that the TEE attesters and the
// KBS verifiers do not link the test fakes, the go-sev-guest and
// go-tdx-guest testing packages (which register flags and carry test
// keys) or the standard testing package.
func TestProductionDepsExcludeFakes(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("go tool not found: %v", err)
	}
	pkgs := []string{
		"github.com/guestd/guestd/attester/snp",
		"github.com/guestd/guestd/attester/tdx",
		"github.com/guestd/guestd/test/kbs/verifier/snp",
		"github.com/guestd/guestd/test/kbs/verifier/tdx",
	}
	out, err := exec.Command("go", append([]string{"list", "-deps"}, pkgs...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < len(pkgs) {
		t.Fatalf("go list -deps listed only %q", deps)
	}
	forbidden := []string{
		"github.com/google/go-sev-guest/testing",
		"github.com/google/go-tdx-guest/testing",
		"github.com/guestd/guestd/test/tee/",
	}
	for _, d := range deps {
		if d == "testing" {
			t.Errorf("production deps include the testing package")
		}
		for _, f := range forbidden {
			if strings.HasPrefix(d, f) {
				t.Errorf("production deps include %s", d)
			}
		}
	}
}
