package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"

	"github.com/guestd/guestd/agent/config"
)

// TestRegistriesConf checks that the inline registry table becomes a
// registries.conf containers/image reads with the same meaning.
func TestRegistriesConf(t *testing.T) {
	rc := &config.RegistryConfig{
		UnqualifiedSearchRegistries: []string{"docker.io", "quay.io"},
		Registry: []config.Registry{
			{Prefix: "example.com/foo", Location: "mirror.example.com/foo", Mirror: []config.Mirror{{Location: "m2.example.com/foo", Insecure: true}}},
			{Location: "blocked.example.com", Blocked: true},
			{Location: "127.0.0.1:5000", Insecure: true},
		},
	}
	data, err := registriesConf(rc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sys := &types.SystemContext{SystemRegistriesConfPath: path, SystemRegistriesConfDirPath: t.TempDir()}
	for _, tc := range []struct {
		ref               string
		location          string
		blocked, insecure bool
		mirrors           int
	}{
		{"example.com/foo/bar:1", "mirror.example.com/foo", false, false, 1},
		{"blocked.example.com/x", "blocked.example.com", true, false, 0},
		{"127.0.0.1:5000/app", "127.0.0.1:5000", false, true, 0},
	} {
		reg, err := sysregistriesv2.FindRegistry(sys, tc.ref)
		if err != nil || reg == nil {
			t.Fatalf("%s: FindRegistry = %v, %v\n%s", tc.ref, reg, err, data)
		}
		if reg.Location != tc.location || reg.Blocked != tc.blocked || reg.Insecure != tc.insecure || len(reg.Mirrors) != tc.mirrors {
			t.Errorf("%s: got %+v", tc.ref, reg)
		}
	}
	search, err := sysregistriesv2.UnqualifiedSearchRegistries(sys)
	if err != nil || strings.Join(search, ",") != "docker.io,quay.io" {
		t.Fatalf("search registries %v, %v", search, err)
	}
}
