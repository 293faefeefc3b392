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

// TestPullOptions checks upstream's precedence is carried into the puller's
// options: policy and sigstore URIs win over inline values, the inline
// registry table wins over its URI.
func TestPullOptions(t *testing.T) {
	img := config.DefaultImage()
	img.ImageSecurityPolicyURI = "kbs:///default/security-policy/test"
	img.ImageSecurityPolicy = `{"default":[{"type":"reject"}]}`
	img.SigstoreConfig = "default-docker: {}\n"
	img.AuthenticatedRegistryCredentialsURI = "kbs:///default/credential/test"
	img.RegistryConfigurationURI = "kbs:///default/registry-configuration/test"
	img.RegistryConfig = &config.RegistryConfig{Registry: []config.Registry{{Location: "r.example", Insecure: true}}}
	img.ImagePullProxy = &config.ImagePullProxy{HTTPSProxy: "http://proxy:3128", NoProxy: "local"}
	img.ExtraRootCertificates = []string{"-----BEGIN CERTIFICATE-----\n..."}
	o, err := PullOptions(img, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case o.PolicyURI != img.ImageSecurityPolicyURI || len(o.Policy) != 0:
		t.Errorf("policy: URI %q inline %q; the URI must win", o.PolicyURI, o.Policy)
	case o.SigstoreConfigURI != "" || string(o.SigstoreConfig) != img.SigstoreConfig:
		t.Errorf("sigstore config: %q / %q", o.SigstoreConfigURI, o.SigstoreConfig)
	case o.RegistriesConfURI != "" || !strings.Contains(string(o.RegistriesConf), `location = "r.example"`):
		t.Errorf("registries: URI %q, inline %s; the inline table must win", o.RegistriesConfURI, o.RegistriesConf)
	case !o.RequirePolicy || o.AuthURI != img.AuthenticatedRegistryCredentialsURI:
		t.Errorf("require policy %v, auth %q", o.RequirePolicy, o.AuthURI)
	case o.HTTPSProxy != "http://proxy:3128" || o.NoProxy != "local" || len(o.ExtraRootCAs) != 1:
		t.Errorf("proxy %q/%q, CAs %d", o.HTTPSProxy, o.NoProxy, len(o.ExtraRootCAs))
	case o.WorkDir != img.WorkDir || o.MaxConcurrentLayers != img.MaxConcurrentLayerDownloadsPerImage:
		t.Errorf("work dir %q, layers %d", o.WorkDir, o.MaxConcurrentLayers)
	}
}
