package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

// envMap turns a map into a LookupEnv.
func envMap(m map[string]string) LookupEnv {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

// wantKeyError checks that err is a *KeyError about key whose message
// names the key and contains every fragment.
func wantKeyError(t *testing.T, err error, key string, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want one about %s", key)
	}
	var ke *KeyError
	if !errors.As(err, &ke) {
		t.Fatalf("error %q is not a *KeyError", err)
	}
	if ke.Key != key {
		t.Errorf("error %q is about key %q, want %q", err, ke.Key, key)
	}
	if !strings.Contains(err.Error(), key) {
		t.Errorf("error %q does not name %s", err, key)
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error %q does not contain %q", err, f)
		}
	}
}

func TestParseCmdlineDefaults(t *testing.T) {
	c, err := ParseCmdline("")
	if err != nil {
		t.Fatal(err)
	}
	want := &Cmdline{
		KbcParams:              KbcParams{KBC: "offline_fs_kbc", URI: ""},
		GuestComponentsProcs:   "api-server-rest",
		GuestComponentsRestAPI: "resource",
		CDHAPITimeout:          50 * time.Second,
		ImagePullTimeout:       1200 * time.Second,
		LaunchProcessTimeout:   6 * time.Second,
		SecureStorageIntegrity: true,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestParseCmdlineValid(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    func(c *Cmdline) // applied to DefaultCmdline
	}{
		{"cc_kbc http", "agent.aa_kbc_params=cc_kbc::http://10.0.0.1:8080", func(c *Cmdline) {
			c.KbcParams, c.KbcParamsFrom = KbcParams{"cc_kbc", "http://10.0.0.1:8080"}, KeyAAKbcParams
		}},
		{"cc_kbc https with path", "agent.aa_kbc_params=cc_kbc::https://kbs.example/prefix", func(c *Cmdline) {
			c.KbcParams, c.KbcParamsFrom = KbcParams{"cc_kbc", "https://kbs.example/prefix"}, KeyAAKbcParams
		}},
		{"offline_fs_kbc null", "agent.aa_kbc_params=offline_fs_kbc::null", func(c *Cmdline) {
			c.KbcParams, c.KbcParamsFrom = KbcParams{"offline_fs_kbc", "null"}, KeyAAKbcParams
		}},
		{"offline_fs_kbc empty uri", "agent.aa_kbc_params=offline_fs_kbc::", func(c *Cmdline) {
			c.KbcParams, c.KbcParamsFrom = KbcParams{"offline_fs_kbc", ""}, KeyAAKbcParams
		}},
		{"offline_sev_kbc", "agent.aa_kbc_params=offline_sev_kbc::null", func(c *Cmdline) {
			c.KbcParams, c.KbcParamsFrom = KbcParams{"offline_sev_kbc", "null"}, KeyAAKbcParams
		}},
		{"https_proxy", "agent.https_proxy=http://1.2.3.4:1234", func(c *Cmdline) { c.HTTPSProxy = "http://1.2.3.4:1234" }},
		{"http_proxy without scheme", "agent.http_proxy=1.2.3.4:3128", func(c *Cmdline) { c.HTTPProxy = "1.2.3.4:3128" }},
		{"no_proxy", "agent.no_proxy=localhost,10.0.0.0/8", func(c *Cmdline) { c.NoProxy = "localhost,10.0.0.0/8" }},
		{"value containing =", "agent.no_proxy=a=b", func(c *Cmdline) { c.NoProxy = "a=b" }},
		{"registry auth kbs", "agent.image_registry_auth=kbs:///default/credential/test", func(c *Cmdline) {
			c.ImageRegistryAuth = "kbs:///default/credential/test"
		}},
		{"registry auth file", "agent.image_registry_auth=file:///root/.docker/config.json", func(c *Cmdline) {
			c.ImageRegistryAuth = "file:///root/.docker/config.json"
		}},
		{"policy file", "agent.image_policy_file=kbs:///default/image-policy/test", func(c *Cmdline) {
			c.ImagePolicyFile = "kbs:///default/image-policy/test"
		}},
		{"sigver true", "agent.enable_signature_verification=true", func(c *Cmdline) { c.EnableSignatureVerification = true }},
		{"sigver false", "agent.enable_signature_verification=false", func(c *Cmdline) {}},
		{"procs none", "agent.guest_components_procs=none", func(c *Cmdline) { c.GuestComponentsProcs = ProcsNone }},
		{"procs aa", "agent.guest_components_procs=attestation-agent", func(c *Cmdline) { c.GuestComponentsProcs = ProcsAttestationAgent }},
		{"procs cdh", "agent.guest_components_procs=confidential-data-hub", func(c *Cmdline) { c.GuestComponentsProcs = ProcsConfidentialDataHub }},
		{"procs asr", "agent.guest_components_procs=api-server-rest", func(c *Cmdline) {}},
		{"rest all", "agent.guest_components_rest_api=all", func(c *Cmdline) { c.GuestComponentsRestAPI = RestAPIAll }},
		{"rest attestation", "agent.guest_components_rest_api=attestation", func(c *Cmdline) { c.GuestComponentsRestAPI = RestAPIAttestation }},
		{"rest resource", "agent.guest_components_rest_api=resource", func(c *Cmdline) {}},
		{"cdh timeout", "agent.cdh_api_timeout=120", func(c *Cmdline) { c.CDHAPITimeout = 120 * time.Second }},
		{"pull timeout", "agent.image_pull_timeout=3600", func(c *Cmdline) { c.ImagePullTimeout = time.Hour }},
		{"launch timeout", "agent.launch_process_timeout=1", func(c *Cmdline) { c.LaunchProcessTimeout = time.Second }},
		{"launch timeout leading zeros", "agent.launch_process_timeout=007", func(c *Cmdline) { c.LaunchProcessTimeout = 7 * time.Second }},
		{"integrity false", "agent.secure_storage_integrity=false", func(c *Cmdline) { c.SecureStorageIntegrity = false }},
		{"integrity 0", "agent.secure_storage_integrity=0", func(c *Cmdline) { c.SecureStorageIntegrity = false }},
		{"integrity 1", "agent.secure_storage_integrity=1", func(c *Cmdline) {}},
		{"integrity 42", "agent.secure_storage_integrity=42", func(c *Cmdline) {}},
		{"kbs_resources one", "cdh.kbs_resources=kbs:///default/key/1::/run/confidential-containers/cdh/kbs/key1", func(c *Cmdline) {
			c.KBSResources = []Credential{{"kbs:///default/key/1", "/run/confidential-containers/cdh/kbs/key1"}}
		}},
		{"kbs_resources two, empty entries skipped", "cdh.kbs_resources=,kbs:///a/b/c::/run/confidential-containers/cdh/kbs/x/c,,kbs+plugin://host/p::/run/confidential-containers/cdh/kbs/p,", func(c *Cmdline) {
			c.KBSResources = []Credential{
				{"kbs:///a/b/c", "/run/confidential-containers/cdh/kbs/x/c"},
				{"kbs+plugin://host/p", "/run/confidential-containers/cdh/kbs/p"},
			}
		}},
		{"repeated identical value", "agent.image_pull_timeout=5 agent.image_pull_timeout=5", func(c *Cmdline) { c.ImagePullTimeout = 5 * time.Second }},
		{"kata keys and others ignored",
			"BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro console=ttyS0,115200n8 agent.log=debug agent.debug_console agent.debug_console_vport=1026 agent.unknown_thing=1 cdh.unknown=2 agent.aa_kbc_params_extra=x quiet",
			func(c *Cmdline) {}},
		{"mixed ASCII whitespace",
			"\tagent.no_proxy=localhost   \n agent.image_registry_auth=kbs:///a/b/c\r\fagent.https_proxy=http://1.2.3.4:1234\n",
			func(c *Cmdline) {
				c.NoProxy, c.ImageRegistryAuth, c.HTTPSProxy = "localhost", "kbs:///a/b/c", "http://1.2.3.4:1234"
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCmdline(tt.cmdline)
			if err != nil {
				t.Fatalf("ParseCmdline(%q): %v", tt.cmdline, err)
			}
			want := DefaultCmdline()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("ParseCmdline(%q)\n got %+v\nwant %+v", tt.cmdline, got, want)
			}
		})
	}
}

func TestParseCmdlineMalformed(t *testing.T) {
	tests := []struct {
		cmdline   string
		key       string
		fragments []string
	}{
		{"agent.aa_kbc_params=cc_kbc", KeyAAKbcParams, []string{"<kbc>::<uri>"}},
		{"agent.aa_kbc_params=cc_kbc::http://a::b", KeyAAKbcParams, []string{"<kbc>::<uri>", "2"}},
		{"agent.aa_kbc_params=cc_kbc:http://a", KeyAAKbcParams, []string{"<kbc>::<uri>"}},
		{"agent.aa_kbc_params=::http://a", KeyAAKbcParams, []string{"KBC name is empty"}},
		{"agent.aa_kbc_params=sample_kbc::null", KeyAAKbcParams, []string{"unsupported KBC", "sample_kbc"}},
		{"agent.aa_kbc_params=cc_kbc::", KeyAAKbcParams, []string{"http(s) URL"}},
		{"agent.aa_kbc_params=cc_kbc::null", KeyAAKbcParams, []string{"http(s) URL"}},
		{"agent.aa_kbc_params=cc_kbc::ftp://kbs", KeyAAKbcParams, []string{"http(s) URL"}},
		{"agent.aa_kbc_params=cc_kbc::http://", KeyAAKbcParams, []string{"http(s) URL"}},
		{"agent.aa_kbc_params", KeyAAKbcParams, []string{"no value"}},
		{"agent.aa_kbc_params=", KeyAAKbcParams, []string{"empty"}},
		{"agent.https_proxy=1.2.3.4:3128", KeyHTTPSProxy, []string{"not a URL"}},
		{"agent.https_proxy=", KeyHTTPSProxy, []string{"empty"}},
		{"agent.http_proxy=", KeyHTTPProxy, []string{"empty"}},
		{"agent.no_proxy=", KeyNoProxy, []string{"empty"}},
		{"agent.image_registry_auth=", KeyImageRegistryAuth, []string{"empty"}},
		{"agent.image_policy_file=", KeyImagePolicyFile, []string{"empty"}},
		{"agent.enable_signature_verification=1", KeyEnableSignatureVerification, []string{"true or false"}},
		{"agent.enable_signature_verification=True", KeyEnableSignatureVerification, []string{"true or false"}},
		{"agent.enable_signature_verification=yes", KeyEnableSignatureVerification, []string{"true or false"}},
		{"agent.enable_signature_verification", KeyEnableSignatureVerification, []string{"no value"}},
		{"agent.secure_storage_integrity=yes", KeySecureStorageIntegrity, []string{"unsigned integer"}},
		{"agent.secure_storage_integrity=-1", KeySecureStorageIntegrity, []string{"boolean"}},
		{"agent.secure_storage_integrity=", KeySecureStorageIntegrity, []string{"empty"}},
		{"agent.guest_components_procs=all", KeyGuestComponentsProcs, []string{"api-server-rest"}},
		{"agent.guest_components_procs=None", KeyGuestComponentsProcs, []string{"none"}},
		{"agent.guest_components_procs=api_server_rest", KeyGuestComponentsProcs, []string{"api-server-rest"}},
		{"agent.guest_components_rest_api=none", KeyGuestComponentsRestAPI, []string{"resource"}},
		{"agent.guest_components_rest_api=Resource", KeyGuestComponentsRestAPI, []string{"resource"}},
		{"agent.image_pull_timeout=abc", KeyImagePullTimeout, []string{`"abc" is not a whole number of seconds`}},
		{"agent.image_pull_timeout=10s", KeyImagePullTimeout, []string{"whole number of seconds"}},
		{"agent.image_pull_timeout=-5", KeyImagePullTimeout, []string{"whole number of seconds"}},
		{"agent.image_pull_timeout=+5", KeyImagePullTimeout, []string{"whole number of seconds"}},
		{"agent.image_pull_timeout=1.5", KeyImagePullTimeout, []string{"whole number of seconds"}},
		{"agent.image_pull_timeout=0", KeyImagePullTimeout, []string{"at least 1 second"}},
		{"agent.image_pull_timeout=99999999999999999999", KeyImagePullTimeout, []string{"too large"}},
		{"agent.image_pull_timeout=9223372037", KeyImagePullTimeout, []string{"too large"}},
		{"agent.cdh_api_timeout=x", KeyCDHAPITimeout, []string{"whole number of seconds"}},
		{"agent.cdh_api_timeout=0", KeyCDHAPITimeout, []string{"at least 1 second"}},
		{"agent.launch_process_timeout=6=6", KeyLaunchProcessTimeout, []string{"whole number of seconds"}},
		{"agent.launch_process_timeout=", KeyLaunchProcessTimeout, []string{"empty"}},
		{"cdh.kbs_resources=kbs:///a/b/c", KeyCDHKBSResources, []string{"<resource-uri>::<path>"}},
		{"cdh.kbs_resources=kbs:///a/b/c:/run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"<resource-uri>::<path>"}},
		{"cdh.kbs_resources=kbs:///a/b/c::/run/temp1", KeyCDHKBSResources, []string{"/run/confidential-containers/cdh/kbs/"}},
		{"cdh.kbs_resources=kbs:///a/b/c::/run/confidential-containers/cdh/kbs/../../x", KeyCDHKBSResources, []string{"clean path"}},
		{"cdh.kbs_resources=kbs:///a/b/c::/run/confidential-containers/cdh/kbsfoo/x", KeyCDHKBSResources, []string{"/run/confidential-containers/cdh/kbs/"}},
		{"cdh.kbs_resources=kbs:///a/b/c::/run/confidential-containers/cdh/kbs/", KeyCDHKBSResources, []string{"under"}},
		{"cdh.kbs_resources=kbs:///a/b/c::run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"under"}},
		{"cdh.kbs_resources=http://a/b/c::/run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"kbs+<plugin>"}},
		{"cdh.kbs_resources=kbs+://a/b::/run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"kbs+<plugin>"}},
		{"cdh.kbs_resources=kbs:///::/run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"no resource path"}},
		{"cdh.kbs_resources=::/run/confidential-containers/cdh/kbs/x", KeyCDHKBSResources, []string{"resource URI"}},
		{"agent.image_pull_timeout=5 agent.image_pull_timeout=6", KeyImagePullTimeout, []string{"twice", `"5"`, `"6"`}},
		{"agent.aa_kbc_params=cc_kbc::http://a agent.aa_kbc_params=offline_fs_kbc::null", KeyAAKbcParams, []string{"twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.cmdline, func(t *testing.T) {
			c, err := ParseCmdline(tt.cmdline)
			if c != nil {
				t.Errorf("got a config along with the error")
			}
			wantKeyError(t, err, tt.key, tt.fragments...)
			if !strings.HasPrefix(err.Error(), SourceCmdline+": ") {
				t.Errorf("error %q does not name its source", err)
			}
		})
	}
}

func TestParseKbcParams(t *testing.T) {
	p, err := ParseKbcParams("cc_kbc::http://1.2.3.4:8080")
	if err != nil {
		t.Fatal(err)
	}
	if p != (KbcParams{KBC: "cc_kbc", URI: "http://1.2.3.4:8080"}) || p.String() != "cc_kbc::http://1.2.3.4:8080" {
		t.Errorf("got %+v (%s)", p, p)
	}
	if got := DefaultKbcParams().String(); got != "offline_fs_kbc::" {
		t.Errorf("default renders as %q", got)
	}
	for _, bad := range []string{"", "cc_kbc", "a::b::c", "offline_fs_kbc:null", "x::y"} {
		if _, err := ParseKbcParams(bad); err == nil {
			t.Errorf("ParseKbcParams(%q) succeeded", bad)
		}
	}
}

func TestProcs(t *testing.T) {
	tests := []struct {
		p             Procs
		aa, cdh, rest bool
	}{
		{ProcsNone, false, false, false},
		{ProcsAttestationAgent, true, false, false},
		{ProcsConfidentialDataHub, true, true, false},
		{ProcsAPIServerRest, true, true, true},
	}
	for _, tt := range tests {
		if tt.p.StartsAA() != tt.aa || tt.p.StartsCDH() != tt.cdh || tt.p.StartsAPIServerRest() != tt.rest {
			t.Errorf("%s: got AA=%v CDH=%v ASR=%v", tt.p, tt.p.StartsAA(), tt.p.StartsCDH(), tt.p.StartsAPIServerRest())
		}
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadCmdlineEnvPrecedence(t *testing.T) {
	withKbc := writeFile(t, "cmdline", "console=ttyS0 agent.aa_kbc_params=cc_kbc::http://cmdline:8080 agent.image_pull_timeout=30\n")
	without := writeFile(t, "cmdline", "console=ttyS0\n")
	malformed := writeFile(t, "cmdline", "agent.aa_kbc_params=cc_kbc\n")

	tests := []struct {
		name     string
		file     string
		env      map[string]string
		want     KbcParams
		wantFrom string
	}{
		{"cmdline only", withKbc, nil, KbcParams{"cc_kbc", "http://cmdline:8080"}, KeyAAKbcParams},
		{"env wins over cmdline", withKbc, map[string]string{"AA_KBC_PARAMS": "cc_kbc::https://env:8443"}, KbcParams{"cc_kbc", "https://env:8443"}, EnvAAKbcParams},
		{"env alone", without, map[string]string{"AA_KBC_PARAMS": "offline_fs_kbc::null"}, KbcParams{"offline_fs_kbc", "null"}, EnvAAKbcParams},
		{"neither: default", without, map[string]string{"OTHER": "x"}, KbcParams{"offline_fs_kbc", ""}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadCmdline(tt.file, envMap(tt.env))
			if err != nil {
				t.Fatal(err)
			}
			if c.KbcParams != tt.want || c.KbcParamsFrom != tt.wantFrom {
				t.Errorf("got %+v from %q, want %+v from %q", c.KbcParams, c.KbcParamsFrom, tt.want, tt.wantFrom)
			}
		})
	}

	c, err := LoadCmdline(withKbc, nil)
	if err != nil || c.ImagePullTimeout != 30*time.Second {
		t.Errorf("nil env: %v, %+v", err, c)
	}

	_, err = LoadCmdline(withKbc, envMap(map[string]string{"AA_KBC_PARAMS": "cc_kbc::http://a::b"}))
	wantKeyError(t, err, EnvAAKbcParams, SourceEnv, "<kbc>::<uri>")

	_, err = LoadCmdline(malformed, envMap(map[string]string{"AA_KBC_PARAMS": "offline_fs_kbc::null"}))
	wantKeyError(t, err, KeyAAKbcParams, malformed)

	_, err = LoadCmdline(filepath.Join(t.TempDir(), "missing"), nil)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v", err)
	}

	big := writeFile(t, "cmdline", strings.Repeat("x ", maxCmdlineSize))
	if _, err := LoadCmdline(big, nil); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("oversized file: got %v", err)
	}
}

func TestLoadCmdlineProc(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc/cmdline is Linux's")
	}
	// The host's command line carries none of guestd's keys, or valid
	// ones; either way reading the default path must work.
	if _, err := LoadCmdline("", nil); err != nil {
		t.Fatalf("LoadCmdline(default): %v", err)
	}
}

func FuzzParseCmdline(f *testing.F) {
	for _, s := range []string{
		"",
		"agent.aa_kbc_params=cc_kbc::http://1.2.3.4:8080 agent.image_pull_timeout=5",
		"cdh.kbs_resources=kbs:///a/b/c::/run/confidential-containers/cdh/kbs/c,",
		"agent.secure_storage_integrity=1 agent.guest_components_procs=none agent.enable_signature_verification=true",
		"agent.https_proxy=http://p:1 agent.https_proxy=http://p:2",
		"agent.launch_process_timeout=\xff\x00=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCmdline(s)
		if err != nil {
			var ke *KeyError
			if !errors.As(err, &ke) || !isCmdlineKey(ke.Key) {
				t.Fatalf("error %q does not name a known key", err)
			}
			return
		}
		if c.CDHAPITimeout < time.Second || c.ImagePullTimeout < time.Second || c.LaunchProcessTimeout < time.Second {
			t.Fatalf("timeout below 1s: %+v", c)
		}
		if err := checkKBC(c.KbcParams.KBC, c.KbcParams.URI); err != nil {
			t.Fatalf("accepted bad kbc params %+v: %v", c.KbcParams, err)
		}
		for _, cr := range c.KBSResources {
			if !strings.HasPrefix(cr.Path, CredentialDir) {
				t.Fatalf("accepted credential path %q", cr.Path)
			}
		}
	})
}
