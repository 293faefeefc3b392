package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// exampleRegistryConfig is [image.registry_config] of upstream's
// example.config.{toml,json}.
func exampleRegistryConfig() *RegistryConfig {
	return &RegistryConfig{
		UnqualifiedSearchRegistries: []string{"docker.io", "example1.com"},
		Registry: []Registry{
			{Prefix: "example.com/banned", Blocked: true},
			{Prefix: "example.com/foo", Location: "internal-registry-for-example.com/bar", Mirror: []Mirror{
				{Location: "example-mirror-0.local/mirror-for-foo"},
				{Location: "example-mirror-1.local/mirrors/foo", Insecure: true},
			}},
			{Location: "docker.io", Mirror: []Mirror{{Location: "123456.mirror.aliyuncs.com"}}},
		},
	}
}

func TestParseCDHUpstreamExamples(t *testing.T) {
	for _, file := range []string{"example.config.toml", "example.config.json"} {
		t.Run(file, func(t *testing.T) {
			c, err := LoadCDH(filepath.Join("testdata", "cdh", file))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(c.KBC.KBSCert, "-----BEGIN CERTIFICATE-----\nMIIFTDCCAvugAwIBAgIBADBGBgkqhkiG9w0BAQow") {
				t.Errorf("kbs_cert: %q", c.KBC.KBSCert)
			}
			c.KBC.KBSCert = ""

			want := &CDH{
				Socket: "unix:///run/confidential-containers/cdh.sock",
				AA:     CDHAA{AASocket: "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"},
				KBC:    CDHKBC{Name: "cc_kbc", URL: "http://example.io:8080"},
				Credentials: []Credential{
					{ResourceURI: "kbs:///default/aliyun/ecs_ram_role", Path: "/run/confidential-containers/cdh/kbs/kms-credential/aliyun/ecsRamRole.json"},
					{ResourceURI: "kbs:///default/test/file", Path: "/run/confidential-containers/cdh/kbs/test/file"},
				},
				Image: Image{
					WorkDir:                             "/run/image-rs",
					MaxConcurrentLayerDownloadsPerImage: 3,
					ImageSecurityPolicyURI:              "kbs:///default/security-policy/test",
					SigstoreConfigURI:                   "kbs:///default/sigstore-config/test",
					AuthenticatedRegistryCredentialsURI: "kbs:///default/credential/test",
					RegistryConfigurationURI:            "kbs:///default/registry-configuration/test",
					RegistryConfig:                      exampleRegistryConfig(),
					ImagePullProxy:                      &ImagePullProxy{HTTPSProxy: "http://127.0.0.1:5432", HTTPProxy: "http://127.0.0.1:5432", NoProxy: "192.168.0.1,localhost"},
				},
				ImageSet: true,
				Log:      Log{Level: "info"},
			}
			if file == "example.config.json" {
				// Only the JSON example sets the inline policy too.
				want.Image.ImageSecurityPolicy = `{"default":[{"type": "reject"}]}`
				if len(c.Image.ExtraRootCertificates) != 1 || !strings.Contains(c.Image.ExtraRootCertificates[0], "oLSG2dLCK9mjjraPjau34Q==\n-----END CERTIFICATE-----") {
					t.Errorf("extra_root_certificates: %q", c.Image.ExtraRootCertificates)
				}
				c.Image.ExtraRootCertificates = nil
			} else {
				// In the TOML example these two keys come after
				// [[image.registry_config.registry.mirror]], so TOML puts
				// them in the last mirror table, not in [image]. Upstream
				// ignores them silently; guestd reports them.
				want.Image.WorkDir = DefaultImageWorkDir
				want.Unknown = []string{
					"image.registry_config.registry[2].mirror[0].extra_root_certificates",
					"image.registry_config.registry[2].mirror[0].work_dir",
				}
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("\n got %+v\nwant %+v", c, want)
			}
		})
	}
}

func TestParseCDHHubTestConfig(t *testing.T) {
	c, err := LoadCDH(filepath.Join("testdata", "cdh", "hub-tests-cdh.toml"))
	if err != nil {
		t.Fatal(err)
	}
	want := &CDH{
		Socket: DefaultCDHSocket,
		AA:     CDHAA{AASocket: DefaultAASocket},
		KBC:    CDHKBC{Name: "offline_fs_kbc", URL: "null"},
		Image: Image{
			WorkDir:                             "/run/kata-containers/image/",
			MaxConcurrentLayerDownloadsPerImage: 4,
			ImageSecurityPolicyURI:              "kbs:///default/security-policy/test",
			AuthenticatedRegistryCredentialsURI: "kbs:///default/credential/test",
		},
		ImageSet: true,
		Log:      Log{Level: "info"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("\n got %+v\nwant %+v", c, want)
	}
}

func TestParseCDHValues(t *testing.T) {
	base := func(c *CDH) { c.KBC = CDHKBC{Name: "offline_fs_kbc"} }
	tests := []struct {
		name string
		file string
		doc  string
		want func(c *CDH) // applied to CDHFromKbcParams({}) after base
	}{
		{"kbc only: all defaults, no [image]", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n", func(c *CDH) {}},
		{"kbs_cert empty", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\nurl = \"\"\nkbs_cert = \"\"\n", func(c *CDH) {}},
		{"offline_sev_kbc", "cdh.toml", "[kbc]\nname = \"offline_sev_kbc\"\n", func(c *CDH) { c.KBC.Name = "offline_sev_kbc" }},
		{"cc_kbc", "cdh.toml", "[kbc]\nname = \"cc_kbc\"\nurl = \"https://kbs:8443\"\nkbs_cert = \"PEM\"\n", func(c *CDH) {
			c.KBC = CDHKBC{Name: "cc_kbc", URL: "https://kbs:8443", KBSCert: "PEM"}
		}},
		{"socket and skip", "cdh.toml", "socket = \"unix:///tmp/cdh.sock\"\nskip_sealed_secret_verification = true\n[aa]\naa_socket = \"unix:///tmp/aa.sock\"\n[kbc]\nname = \"offline_fs_kbc\"\n", func(c *CDH) {
			c.Socket, c.SkipSealedSecretVerification, c.AA.AASocket = "unix:///tmp/cdh.sock", true, "unix:///tmp/aa.sock"
		}},
		{"[aa] without aa_socket keeps default", "cdh.toml", "[aa]\n[kbc]\nname = \"offline_fs_kbc\"\n", func(c *CDH) {}},
		{"empty credentials array", "cdh.toml", "credentials = []\n[kbc]\nname = \"offline_fs_kbc\"\n", func(c *CDH) {}},
		{"inline credentials", "cdh.toml", "credentials = [{resource_uri = \"kbs:///a/b/c\", path = \"/run/confidential-containers/cdh/kbs/c\"}]\n[kbc]\nname = \"offline_fs_kbc\"\n", func(c *CDH) {
			c.Credentials = []Credential{{"kbs:///a/b/c", "/run/confidential-containers/cdh/kbs/c"}}
		}},
		{"same credential twice", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/c\"\n[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/c\"\n", func(c *CDH) {
			c.Credentials = []Credential{{"kbs:///a/b/c", "/run/confidential-containers/cdh/kbs/c"}, {"kbs:///a/b/c", "/run/confidential-containers/cdh/kbs/c"}}
		}},
		{"empty [image] means defaults, not cmdline", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[image]\n", func(c *CDH) { c.ImageSet = true }},
		{"inline multi-line policy", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[image]\nimage_security_policy = \"\"\"\n{\n    \"default\": [{\"type\": \"reject\"}]\n}\n\"\"\"\n", func(c *CDH) {
			c.ImageSet = true
			c.Image.ImageSecurityPolicy = "{\n    \"default\": [{\"type\": \"reject\"}]\n}\n"
		}},
		{"every image key", "cdh.toml", `[kbc]
name = "offline_fs_kbc"
[image]
work_dir = "/var/lib/guestd/image"
max_concurrent_layer_downloads_per_image = 1
image_security_policy_uri = "file:///etc/policy.json"
image_security_policy = "{}"
sigstore_config_uri = "kbs:///default/sigstore-config/test"
sigstore_config = "default-docker: {}"
authenticated_registry_credentials_uri = "/etc/auth.json"
registry_configuration_uri = "kbs:///default/registry/1"
extra_root_certificates = []
[image.registry_config]
unqualified-search-registries = []
[image.image_pull_proxy]
no_proxy = ""
`, func(c *CDH) {
			c.ImageSet = true
			c.Image = Image{
				WorkDir:                             "/var/lib/guestd/image",
				MaxConcurrentLayerDownloadsPerImage: 1,
				ImageSecurityPolicyURI:              "file:///etc/policy.json",
				ImageSecurityPolicy:                 "{}",
				SigstoreConfigURI:                   "kbs:///default/sigstore-config/test",
				SigstoreConfig:                      "default-docker: {}",
				AuthenticatedRegistryCredentialsURI: "/etc/auth.json",
				RegistryConfigurationURI:            "kbs:///default/registry/1",
				RegistryConfig:                      &RegistryConfig{UnqualifiedSearchRegistries: []string{}},
				ImagePullProxy:                      &ImagePullProxy{},
				ExtraRootCertificates:               []string{},
			}
		}},
		{"registry_config default search registry", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[image.registry_config]\n[[image.registry_config.registry]]\nprefix = \"*.example.com\"\nlocation = \"mirror.example.com\"\ninsecure = true\n", func(c *CDH) {
			c.ImageSet = true
			c.Image.RegistryConfig = &RegistryConfig{
				UnqualifiedSearchRegistries: []string{"docker.io"},
				Registry:                    []Registry{{Prefix: "*.example.com", Location: "mirror.example.com", Insecure: true}},
			}
		}},
		{"json", "cdh.json", `{"kbc":{"name":"cc_kbc","url":"http://k:8080"},"credentials":[{"resource_uri":"kbs:///a/b/c","path":"/run/confidential-containers/cdh/kbs/c"}],"image":{"max_concurrent_layer_downloads_per_image":7,"image_pull_proxy":{"https_proxy":"http://p:3128"}}}`, func(c *CDH) {
			c.KBC = CDHKBC{Name: "cc_kbc", URL: "http://k:8080"}
			c.Credentials = []Credential{{"kbs:///a/b/c", "/run/confidential-containers/cdh/kbs/c"}}
			c.ImageSet = true
			c.Image.MaxConcurrentLayerDownloadsPerImage = 7
			c.Image.ImagePullProxy = &ImagePullProxy{HTTPSProxy: "http://p:3128"}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCDH(tt.file, []byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			want := CDHFromKbcParams(KbcParams{})
			base(want)
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestParseCDHMalformed(t *testing.T) {
	const kbc = "[kbc]\nname = \"offline_fs_kbc\"\n"
	tests := []struct {
		name      string
		file      string
		doc       string
		key       string
		fragments []string
	}{
		{"no kbc", "cdh.toml", "socket = \"unix:///run/cdh.sock\"\n", "kbc", []string{"required"}},
		{"kbc name missing", "cdh.toml", "[kbc]\nurl = \"http://k\"\n", "kbc.name", []string{"required"}},
		{"kbc name unsupported", "cdh.toml", "[kbc]\nname = \"sample_kbc\"\n", "kbc.name", []string{"unsupported KBC"}},
		{"kbc name wrong type", "cdh.toml", "[kbc]\nname = 1\n", "kbc.name", []string{"expected a string"}},
		{"cc_kbc without url", "cdh.toml", "[kbc]\nname = \"cc_kbc\"\n", "kbc.url", []string{"http(s) URL"}},
		{"cc_kbc bad url", "cdh.toml", "[kbc]\nname = \"cc_kbc\"\nurl = \"kbs:8080\"\n", "kbc.url", []string{"http(s) URL"}},
		{"kbs_cert wrong type", "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\nkbs_cert = true\n", "kbc.kbs_cert", []string{"expected a string"}},
		{"socket tcp", "cdh.toml", "socket = \"127.0.0.1:50000\"\n" + kbc, "socket", []string{"unix:///"}},
		{"socket relative", "cdh.toml", "socket = \"unix://run/cdh.sock\"\n" + kbc, "socket", []string{"unix:///"}},
		{"aa_socket bad", "cdh.toml", "[aa]\naa_socket = \"/run/aa.sock\"\n" + kbc, "aa.aa_socket", []string{"unix:///"}},
		{"skip wrong type", "cdh.toml", "skip_sealed_secret_verification = \"true\"\n" + kbc, "skip_sealed_secret_verification", []string{"true or false"}},
		{"empty [[credentials]] (upstream test)", "cdh.toml", kbc + "[[credentials]]\n", "credentials[0].resource_uri", []string{"required"}},
		{"credential path missing", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\n", "credentials[0].path", []string{"required"}},
		{"credential path outside", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/etc/config.toml\"\n", "credentials[0].path", []string{CredentialDir}},
		{"credential path dotdot", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/kms-credential/../../../config.toml\"\n", "credentials[0].path", nil},
		{"credential path dot", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/kms-credential/./config.toml\"\n", "credentials[0].path", nil},
		{"credential path sibling prefix", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs-evil/x\"\n", "credentials[0].path", nil},
		{"credential second entry", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/a\"\n[[credentials]]\nresource_uri = \"file:///x\"\npath = \"/run/confidential-containers/cdh/kbs/b\"\n", "credentials[1].resource_uri", []string{"kbs+<plugin>"}},
		{"credential conflict", "cdh.toml", kbc + "[[credentials]]\nresource_uri = \"kbs:///a/b/c\"\npath = \"/run/confidential-containers/cdh/kbs/a\"\n[[credentials]]\nresource_uri = \"kbs:///a/b/d\"\npath = \"/run/confidential-containers/cdh/kbs/a\"\n", "credentials", []string{"both"}},
		{"credentials not array", "cdh.toml", "credentials = \"x\"\n" + kbc, "credentials", []string{"array of tables"}},
		{"credentials array of strings", "cdh.toml", "credentials = [\"x\"]\n" + kbc, "credentials[0]", []string{"expected a table"}},
		{"image not table", "cdh.toml", "image = 1\n" + kbc, "image", []string{"expected a table"}},
		{"work_dir relative", "cdh.toml", kbc + "[image]\nwork_dir = \"run/image\"\n", "image.work_dir", []string{"absolute"}},
		{"max downloads zero", "cdh.toml", kbc + "[image]\nmax_concurrent_layer_downloads_per_image = 0\n", "image.max_concurrent_layer_downloads_per_image", []string{"expected 1 to"}},
		{"max downloads negative", "cdh.toml", kbc + "[image]\nmax_concurrent_layer_downloads_per_image = -3\n", "image.max_concurrent_layer_downloads_per_image", nil},
		{"max downloads huge", "cdh.toml", kbc + "[image]\nmax_concurrent_layer_downloads_per_image = 99999999999\n", "image.max_concurrent_layer_downloads_per_image", nil},
		{"max downloads string", "cdh.toml", kbc + "[image]\nmax_concurrent_layer_downloads_per_image = \"3\"\n", "image.max_concurrent_layer_downloads_per_image", []string{"expected an integer"}},
		{"policy uri empty", "cdh.toml", kbc + "[image]\nimage_security_policy_uri = \"\"\n", "image.image_security_policy_uri", []string{"empty"}},
		{"policy inline empty", "cdh.toml", kbc + "[image]\nimage_security_policy = \"\"\n", "image.image_security_policy", []string{"empty"}},
		{"policy wrong type", "cdh.toml", kbc + "[image]\nimage_security_policy = { default = [] }\n", "image.image_security_policy", []string{"expected a string"}},
		{"sigstore uri empty", "cdh.toml", kbc + "[image]\nsigstore_config_uri = \"\"\n", "image.sigstore_config_uri", nil},
		{"sigstore inline empty", "cdh.toml", kbc + "[image]\nsigstore_config = \"\"\n", "image.sigstore_config", nil},
		{"auth uri empty", "cdh.toml", kbc + "[image]\nauthenticated_registry_credentials_uri = \"\"\n", "image.authenticated_registry_credentials_uri", nil},
		{"registry uri empty", "cdh.toml", kbc + "[image]\nregistry_configuration_uri = \"\"\n", "image.registry_configuration_uri", nil},
		{"registry_config string", "cdh.toml", kbc + "[image]\nregistry_config = \"unqualified-search-registries = []\"\n", "image.registry_config", []string{"expected a table"}},
		{"registry no prefix no location", "cdh.toml", kbc + "[[image.registry_config.registry]]\ninsecure = true\n", "image.registry_config.registry[0]", []string{"neither prefix nor location"}},
		{"registry wildcard without location", "cdh.toml", kbc + "[[image.registry_config.registry]]\nprefix = \"*.example.com\"\n", "image.registry_config.registry[0].prefix", []string{"wildcard"}},
		{"mirror without location", "cdh.toml", kbc + "[[image.registry_config.registry]]\nlocation = \"docker.io\"\n[[image.registry_config.registry.mirror]]\ninsecure = true\n", "image.registry_config.registry[0].mirror[0].location", []string{"required"}},
		{"mirror empty location", "cdh.toml", kbc + "[[image.registry_config.registry]]\nlocation = \"docker.io\"\n[[image.registry_config.registry.mirror]]\nlocation = \"\"\n", "image.registry_config.registry[0].mirror[0].location", []string{"empty"}},
		{"registry blocked string", "cdh.toml", kbc + "[[image.registry_config.registry]]\nlocation = \"docker.io\"\nblocked = \"yes\"\n", "image.registry_config.registry[0].blocked", nil},
		{"search registries not strings", "cdh.toml", kbc + "[image.registry_config]\nunqualified-search-registries = [1]\n", "image.registry_config.unqualified-search-registries[0]", []string{"expected a string"}},
		{"https proxy empty", "cdh.toml", kbc + "[image.image_pull_proxy]\nhttps_proxy = \"\"\n", "image.image_pull_proxy.https_proxy", []string{"empty"}},
		{"http proxy empty", "cdh.toml", kbc + "[image.image_pull_proxy]\nhttp_proxy = \"\"\n", "image.image_pull_proxy.http_proxy", nil},
		{"no_proxy wrong type", "cdh.toml", kbc + "[image.image_pull_proxy]\nno_proxy = [\"a\"]\n", "image.image_pull_proxy.no_proxy", []string{"expected a string"}},
		{"extra certs string", "cdh.toml", kbc + "[image]\nextra_root_certificates = \"PEM\"\n", "image.extra_root_certificates", []string{"array of strings"}},
		{"log level", "cdh.toml", kbc + "[log]\nlevel = \"loud\"\n", "log.level", nil},
		{"json kbc name number", "cdh.json", `{"kbc":{"name":3}}`, "kbc.name", []string{"expected a string"}},
		{"json credentials object", "cdh.json", `{"kbc":{"name":"offline_fs_kbc"},"credentials":{"path":"x"}}`, "credentials", []string{"array of tables"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseCDH(tt.file, []byte(tt.doc))
			if c != nil {
				t.Error("got a config along with the error")
			}
			wantKeyError(t, err, tt.key, tt.fragments...)
			if !strings.Contains(err.Error(), tt.file+": ") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestParseCDHUnknownKeys(t *testing.T) {
	doc := `
sockets = "typo"
[aa]
socket = "unix:///x"
[kbc]
name = "offline_fs_kbc"
urls = "x"
[[credentials]]
resource_uri = "kbs:///a/b/c"
path = "/run/confidential-containers/cdh/kbs/c"
mode = "0600"
[image]
some_undefined_field = "unknown value"
default_snapshot = "overlay"
[image.image_pull_proxy]
ftp_proxy = "x"
[[image.registry_config.registry]]
location = "docker.io"
aliases = []
[[image.registry_config.registry.mirror]]
location = "m"
pull-from-mirror = "all"
[log]
level = "info"
file = "/dev/null"
[extra.deep]
k = 1
`
	c, err := ParseCDH("cdh.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"aa.socket",
		"credentials[0].mode",
		"extra",
		"image.default_snapshot",
		"image.image_pull_proxy.ftp_proxy",
		"image.registry_config.registry[0].aliases",
		"image.registry_config.registry[0].mirror[0].pull-from-mirror",
		"image.some_undefined_field",
		"kbc.urls",
		"log.file",
		"sockets",
	}
	if !reflect.DeepEqual(c.Unknown, want) {
		t.Errorf("unknown keys\n got %q\nwant %q", c.Unknown, want)
	}
	if c.Socket != DefaultCDHSocket || c.AA.AASocket != DefaultAASocket || len(c.Credentials) != 1 {
		t.Errorf("known keys not read or defaults lost: %+v", c)
	}
}

func TestImagePrecedence(t *testing.T) {
	rc := &RegistryConfig{UnqualifiedSearchRegistries: []string{"quay.io"}}
	tests := []struct {
		name                    string
		img                     Image
		policyURI, policyInline string
		sigURI, sigInline       string
		regURI                  string
		regInline               *RegistryConfig
	}{
		{"nothing", Image{}, "", "", "", "", "", nil},
		{"uri beats inline for policy and sigstore; inline beats uri for registries",
			Image{ImageSecurityPolicyURI: "kbs:///p", ImageSecurityPolicy: "{}", SigstoreConfigURI: "kbs:///s", SigstoreConfig: "y", RegistryConfigurationURI: "kbs:///r", RegistryConfig: rc},
			"kbs:///p", "", "kbs:///s", "", "", rc},
		{"inline only",
			Image{ImageSecurityPolicy: "{}", SigstoreConfig: "y", RegistryConfig: rc},
			"", "{}", "", "y", "", rc},
		{"uri only",
			Image{ImageSecurityPolicyURI: "kbs:///p", SigstoreConfigURI: "kbs:///s", RegistryConfigurationURI: "kbs:///r"},
			"kbs:///p", "", "kbs:///s", "", "kbs:///r", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if u, i := tt.img.SecurityPolicy(); u != tt.policyURI || i != tt.policyInline {
				t.Errorf("SecurityPolicy = %q, %q", u, i)
			}
			if u, i := tt.img.Sigstore(); u != tt.sigURI || i != tt.sigInline {
				t.Errorf("Sigstore = %q, %q", u, i)
			}
			if u, i := tt.img.Registries(); u != tt.regURI || i != tt.regInline {
				t.Errorf("Registries = %q, %v", u, i)
			}
		})
	}
	if p := (Registry{Location: "docker.io"}).EffectivePrefix(); p != "docker.io" {
		t.Errorf("EffectivePrefix without prefix = %q", p)
	}
	if p := (Registry{Prefix: "a", Location: "b"}).EffectivePrefix(); p != "a" {
		t.Errorf("EffectivePrefix with prefix = %q", p)
	}
}

func TestImageFromCmdline(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    func(i *Image) // applied to DefaultImage
	}{
		{"empty", "", func(i *Image) {}},
		{"proxy only https", "agent.https_proxy=http://1.2.3.4:1234", func(i *Image) {
			i.ImagePullProxy = &ImagePullProxy{HTTPSProxy: "http://1.2.3.4:1234"}
		}},
		{"no_proxy alone still makes a proxy section", "agent.no_proxy=localhost", func(i *Image) {
			i.ImagePullProxy = &ImagePullProxy{NoProxy: "localhost"}
		}},
		{"all proxies", "agent.https_proxy=http://p:1 agent.http_proxy=http://p:2 agent.no_proxy=localhost", func(i *Image) {
			i.ImagePullProxy = &ImagePullProxy{HTTPSProxy: "http://p:1", HTTPProxy: "http://p:2", NoProxy: "localhost"}
		}},
		{"auth", "agent.image_registry_auth=kbs:///default/credential/test", func(i *Image) {
			i.AuthenticatedRegistryCredentialsURI = "kbs:///default/credential/test"
		}},
		{"policy ignored without verification", "agent.image_policy_file=kbs:///default/image-policy/test", func(i *Image) {}},
		{"policy ignored with verification false", "agent.image_policy_file=kbs:///p agent.enable_signature_verification=false", func(i *Image) {}},
		{"policy used with verification", "agent.enable_signature_verification=true agent.image_policy_file=file:///etc/image-policy.json", func(i *Image) {
			i.ImageSecurityPolicyURI = "file:///etc/image-policy.json"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd, err := ParseCmdline(tt.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ImageFromCmdline(cmd)
			if err != nil {
				t.Fatal(err)
			}
			want := DefaultImage()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
	cmd, _ := ParseCmdline("agent.enable_signature_verification=true")
	_, err := ImageFromCmdline(cmd)
	wantKeyError(t, err, KeyEnableSignatureVerification, KeyImagePolicyFile)

	if got, err := ImageFromCmdline(nil); err != nil || !reflect.DeepEqual(got, DefaultImage()) {
		t.Errorf("nil cmdline: %v, %+v", err, got)
	}
}

func TestResolveCDH(t *testing.T) {
	const res = "/run/confidential-containers/cdh/kbs/"
	cmd, err := ParseCmdline("agent.aa_kbc_params=cc_kbc::http://cmdline:8080 agent.https_proxy=http://proxy:3128 agent.image_registry_auth=kbs:///default/auth/cmdline cdh.kbs_resources=kbs:///default/key/1::" + res + "k1")
	if err != nil {
		t.Fatal(err)
	}
	withImage := writeFile(t, "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[[credentials]]\nresource_uri = \"kbs:///default/x/y\"\npath = \""+res+"file\"\n[image]\nauthenticated_registry_credentials_uri = \"kbs:///default/auth/1\"\n")
	withoutImage := writeFile(t, "cdh.toml", "[kbc]\nname = \"cc_kbc\"\nurl = \"http://file:8080\"\nkbs_cert = \"FILECERT\"\n")
	conflict := writeFile(t, "cdh.toml", "[kbc]\nname = \"offline_fs_kbc\"\n[[credentials]]\nresource_uri = \"kbs:///default/other/1\"\npath = \""+res+"k1\"\n")

	t.Run("no file", func(t *testing.T) {
		c, err := ResolveCDH("", cmd, nil)
		if err != nil {
			t.Fatal(err)
		}
		want := &CDH{
			Socket:      DefaultCDHSocket,
			AA:          CDHAA{AASocket: DefaultAASocket},
			KBC:         CDHKBC{Name: "cc_kbc", URL: "http://cmdline:8080"},
			Credentials: []Credential{{"kbs:///default/key/1", res + "k1"}},
			Image: Image{
				WorkDir:                             DefaultImageWorkDir,
				MaxConcurrentLayerDownloadsPerImage: 3,
				AuthenticatedRegistryCredentialsURI: "kbs:///default/auth/cmdline",
				ImagePullProxy:                      &ImagePullProxy{HTTPSProxy: "http://proxy:3128"},
			},
			Log: Log{Level: "info"},
		}
		if !reflect.DeepEqual(c, want) {
			t.Errorf("\n got %+v\nwant %+v", c, want)
		}
	})
	t.Run("no file, no cmdline", func(t *testing.T) {
		c, err := ResolveCDH("", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.KBC != (CDHKBC{Name: "offline_fs_kbc"}) || c.Image.ImagePullProxy != nil || len(c.Credentials) != 0 {
			t.Errorf("got %+v", c)
		}
	})
	t.Run("file with [image] ignores cmdline image keys", func(t *testing.T) {
		c, err := ResolveCDH(withImage, cmd, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.Image.AuthenticatedRegistryCredentialsURI != "kbs:///default/auth/1" || c.Image.ImagePullProxy != nil {
			t.Errorf("image: %+v", c.Image)
		}
		if c.KBC.Name != "offline_fs_kbc" {
			t.Errorf("file kbc replaced by cmdline: %+v", c.KBC)
		}
		want := []Credential{{"kbs:///default/x/y", res + "file"}, {"kbs:///default/key/1", res + "k1"}}
		if !reflect.DeepEqual(c.Credentials, want) {
			t.Errorf("credentials: got %+v, want file ones then cdh.kbs_resources", c.Credentials)
		}
	})
	t.Run("file without [image] takes cmdline image keys", func(t *testing.T) {
		c, err := ResolveCDH(withoutImage, cmd, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.Image.AuthenticatedRegistryCredentialsURI != "kbs:///default/auth/cmdline" || c.Image.ImagePullProxy == nil || c.Image.ImagePullProxy.HTTPSProxy != "http://proxy:3128" {
			t.Errorf("image: %+v", c.Image)
		}
		if c.KBC != (CDHKBC{Name: "cc_kbc", URL: "http://file:8080", KBSCert: "FILECERT"}) {
			t.Errorf("kbc: %+v", c.KBC)
		}
	})
	t.Run("environment", func(t *testing.T) {
		env := envMap(map[string]string{
			"CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS": "file:///test",
			"AA_KBC_PARAMS":                   "cc_kbc::https://env:8443",
			"AA_SOCKET":                       "unix:///env/aa.sock",
			"KBS_CERT":                        "ENVCERT",
			"SKIP_SEALED_SECRET_VERIFICATION": "true",
			"RUST_LOG":                        "debug",
		})
		c, err := ResolveCDH(withImage, cmd, env)
		if err != nil {
			t.Fatal(err)
		}
		if c.Image.AuthenticatedRegistryCredentialsURI != "file:///test" {
			t.Errorf("registry auth env does not win over the file: %q", c.Image.AuthenticatedRegistryCredentialsURI)
		}
		if c.KBC != (CDHKBC{Name: "cc_kbc", URL: "https://env:8443", KBSCert: "ENVCERT"}) {
			t.Errorf("kbc: %+v", c.KBC)
		}
		if c.AA.AASocket != "unix:///env/aa.sock" || !c.SkipSealedSecretVerification || c.Log.Level != "debug" {
			t.Errorf("got %+v", c)
		}
		// The file's kbs_cert beats KBS_CERT.
		c, err = ResolveCDH(withoutImage, cmd, env)
		if err != nil || c.KBC.KBSCert != "FILECERT" {
			t.Errorf("kbs_cert: %v, %+v", err, c)
		}
		// Only the exact string "true" skips verification.
		c, err = ResolveCDH(withImage, cmd, envMap(map[string]string{"SKIP_SEALED_SECRET_VERIFICATION": "1"}))
		if err != nil || c.SkipSealedSecretVerification {
			t.Errorf("SKIP_SEALED_SECRET_VERIFICATION=1: %v, %+v", err, c)
		}
	})
	t.Run("errors", func(t *testing.T) {
		tests := []struct {
			name string
			file string
			cmd  string
			env  map[string]string
			key  string
		}{
			{"bad AA_KBC_PARAMS", withImage, "", map[string]string{"AA_KBC_PARAMS": "cc_kbc"}, EnvAAKbcParams},
			{"bad AA_SOCKET", withImage, "", map[string]string{"AA_SOCKET": "/run/aa.sock"}, EnvAASocket},
			{"empty registry auth env", withImage, "", map[string]string{"CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS": ""}, EnvCDHDefaultRegistryAuth},
			{"bad RUST_LOG", withImage, "", map[string]string{"RUST_LOG": "noisy"}, EnvRustLog},
			{"verification without policy", "", "agent.enable_signature_verification=true", nil, KeyEnableSignatureVerification},
			{"verification without policy, file without [image]", withoutImage, "agent.enable_signature_verification=true", nil, KeyEnableSignatureVerification},
			{"credential path conflict", conflict, "cdh.kbs_resources=kbs:///default/key/1::" + res + "k1", nil, KeyCDHKBSResources},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cmd, err := ParseCmdline(tt.cmd)
				if err != nil {
					t.Fatal(err)
				}
				c, err := ResolveCDH(tt.file, cmd, envMap(tt.env))
				if c != nil {
					t.Error("got a config along with the error")
				}
				wantKeyError(t, err, tt.key)
			})
		}
		// The verification check does not apply when the file has [image].
		cmd, _ := ParseCmdline("agent.enable_signature_verification=true")
		if _, err := ResolveCDH(withImage, cmd, nil); err != nil {
			t.Errorf("file with [image]: %v", err)
		}
		_, err := ResolveCDH(filepath.Join(t.TempDir(), "missing.toml"), nil, nil)
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing file: %v", err)
		}
	})
}

func TestParseRegistryConfig(t *testing.T) {
	doc := `
unqualified-search-registries = ["quay.io"]
credential-helpers = ["x"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.com/bar"
[[registry.mirror]]
location = "mirror.local/foo"
insecure = true

[[registry]]
location = "docker.io"
`
	rc, unknown, err := ParseRegistryConfig("registries.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := &RegistryConfig{
		UnqualifiedSearchRegistries: []string{"quay.io"},
		Registry: []Registry{
			{Prefix: "example.com/foo", Location: "internal.example.com/bar", Mirror: []Mirror{{Location: "mirror.local/foo", Insecure: true}}},
			{Location: "docker.io"},
		},
	}
	if !reflect.DeepEqual(rc, want) {
		t.Errorf("\n got %+v\nwant %+v", rc, want)
	}
	if !reflect.DeepEqual(unknown, []string{"credential-helpers"}) {
		t.Errorf("unknown = %q", unknown)
	}

	rc, _, err = ParseRegistryConfig("registries.toml", nil)
	if err != nil || !reflect.DeepEqual(rc, &RegistryConfig{UnqualifiedSearchRegistries: []string{"docker.io"}}) {
		t.Errorf("empty document: %v, %+v", err, rc)
	}

	_, _, err = ParseRegistryConfig("registries.toml", []byte("[[registry]]\nprefix = \"*.x\"\n"))
	wantKeyError(t, err, "registry[0].prefix", "registries.toml")
	_, _, err = ParseRegistryConfig("registries.toml", []byte("[[registry\n"))
	if err == nil || !strings.Contains(err.Error(), "registries.toml") {
		t.Errorf("syntax error: %v", err)
	}
}

func FuzzParseCDH(f *testing.F) {
	for _, name := range []string{"example.config.toml", "hub-tests-cdh.toml"} {
		data, err := os.ReadFile(filepath.Join("testdata", "cdh", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("[kbc]\nname = \"offline_fs_kbc\"\n[[credentials]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCDH("fuzz.toml", data)
		if err == nil && c.KBC.Name == "" {
			t.Fatal("accepted a config without a KBC name")
		}
		_, _ = ParseCDH("fuzz.json", data)
		_, _ = ParseAA("fuzz.toml", data)
	})
}
