package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadGuestd(t *testing.T) {
	full := func(file string) *Guestd {
		cdh := CDHFromKbcParams(KbcParams{KBC: KBCCC, URI: "https://kbs.example:8080"})
		cdh.Socket = "unix:///tmp/cdh-config.sock"
		cdh.ImageSet = true
		cdh.Image.WorkDir = "/tmp/image"
		return &Guestd{
			Path:            file,
			Tee:             "sample",
			Cmdline:         "/tmp/cmdline",
			Initdata:        "/tmp/initdata.toml",
			AttestationSock: "unix:///tmp/aa.sock",
			CDHSock:         "unix:///tmp/cdh.sock",
			REST:            "127.0.0.1:9006",
			RESTFeatures:    RestAPIAll,
			GRPC:            []string{"unix:///tmp/grpc.sock", "tcp://127.0.0.1:50000", "vsock://any:1100"},
			ExposeTEEKey:    true,
			AA: &AA{
				TokenConfigs:   TokenConfigs{KBS: &KBSToken{URL: "https://kbs.example:8080", TeeKeyAlgorithm: TeeKeyECDHP521}},
				EventlogConfig: EventlogConfig{InitPCR: 16, EnableEventlog: true},
				Log:            Log{Level: DefaultLogLevel},
			},
			CDH: cdh,
		}
	}
	tests := []struct {
		file string
		want func(file string) *Guestd
	}{
		{"full.toml", full},
		{"full.json", full},
		{"empty.toml", func(file string) *Guestd {
			g := DefaultGuestd()
			g.Path = file
			return g
		}},
		{"unknown.toml", func(file string) *Guestd {
			g := DefaultGuestd()
			g.Path = file
			g.REST = ""
			g.AA = DefaultAA()
			g.AA.TokenConfigs.KBS = &KBSToken{URL: "http://kbs:8080", TeeKeyAlgorithm: TeeKeyECDHP256}
			g.CDH = CDHFromKbcParams(KbcParams{KBC: KBCOfflineFS})
			g.CDH.ImageSet = true
			g.Unknown = []string{
				"attestation_agent.token_configs.kbs.retries",
				"attestation_agent.tracing",
				"confidential_data_hub.image.pull_timeout",
				"listen",
			}
			return g
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			file := filepath.Join("testdata", "guestd", tt.file)
			got, err := LoadGuestd(file)
			if err != nil {
				t.Fatal(err)
			}
			if want := tt.want(file); !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
				if !reflect.DeepEqual(got.AA, want.AA) {
					t.Errorf("AA:\n got %s\nwant %s", dumpAA(got.AA), dumpAA(want.AA))
				}
				if !reflect.DeepEqual(got.CDH, want.CDH) {
					t.Errorf("CDH:\n got %+v\nwant %+v", got.CDH, want.CDH)
				}
			}
		})
	}
	if _, err := LoadGuestd(filepath.Join("testdata", "guestd", "missing.toml")); err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestParseGuestdMalformed checks that errors name the file and the full
// dotted key, inside the upstream tables too.
func TestParseGuestdMalformed(t *testing.T) {
	tests := []struct {
		name, doc, key, fragment string
	}{
		{"not TOML", "tee = \n", "", "invalid TOML"},
		{"tee not a string", "tee = 1\n", "tee", "expected a string"},
		{"relative cmdline", "cmdline = \"proc/cmdline\"\n", "cmdline", "absolute path"},
		{"relative initdata", "initdata = \"initdata.toml\"\n", "initdata", "absolute path"},
		{"aa socket not unix", "attestation_sock = \"tcp://127.0.0.1:1\"\n", "attestation_sock", "unix:///"},
		{"cdh socket relative", "cdh_sock = \"unix://cdh.sock\"\n", "cdh_sock", "unix:///"},
		{"rest without port", "rest = \"127.0.0.1\"\n", "rest", "HOST:PORT"},
		{"rest features", "rest_features = \"everything\"\n", "rest_features", "resource"},
		{"grpc not a list", "grpc = \"tcp://127.0.0.1:1\"\n", "grpc", "array of strings"},
		{"grpc element", "grpc = [\"tcp://127.0.0.1:1\", 2]\n", "grpc[1]", "expected a string"},
		{"expose not bool", "expose_tee_key = \"yes\"\n", "expose_tee_key", "true or false"},
		{"aa not a table", "attestation_agent = \"aa.toml\"\n", "attestation_agent", "expected a table"},
		{"aa url", "[attestation_agent.token_configs.kbs]\nurl = \"kbs:8080\"\n", "attestation_agent.token_configs.kbs.url", "http(s) URL"},
		{"aa pcr", "[attestation_agent.eventlog_config]\ninit_pcr = 24\n", "attestation_agent.eventlog_config.init_pcr", "PCR index"},
		{"cdh without kbc", "[confidential_data_hub]\nsocket = \"unix:///run/cdh.sock\"\n", "confidential_data_hub.kbc", "required"},
		{"cdh kbc", "[confidential_data_hub.kbc]\nname = \"foo_kbc\"\n", "confidential_data_hub.kbc.name", "unsupported KBC"},
		{"cdh work dir", "[confidential_data_hub.kbc]\nname = \"offline_fs_kbc\"\n[confidential_data_hub.image]\nwork_dir = \"image\"\n", "confidential_data_hub.image.work_dir", "absolute path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseGuestd("/etc/guestd/guestd.toml", []byte(tt.doc))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tt.fragment) || !strings.Contains(err.Error(), "/etc/guestd/guestd.toml") {
				t.Errorf("error %q does not name the file and say %q", err, tt.fragment)
			}
			if tt.key == "" {
				return
			}
			var ke *KeyError
			if !errors.As(err, &ke) || ke.Key != tt.key || ke.Source != "/etc/guestd/guestd.toml" {
				t.Errorf("error %q: want a KeyError for %s", err, tt.key)
			}
		})
	}
}

// TestGuestdResolve checks the precedence of the AA and CDH configuration
// of guestd serve without -c / --cdh-config: initdata's aa.toml / cdh.toml,
// then the file's tables, then agent.aa_kbc_params; the environment on
// top.
func TestGuestdResolve(t *testing.T) {
	const (
		initdataBoth = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n" +
			"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://initdata-kbs:8080\"\n'''\n" +
			"\"cdh.toml\" = '''\n[kbc]\nname = \"cc_kbc\"\nurl = \"http://initdata-kbs:8080\"\n'''\n"
		initdataPolicyOnly = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = \"package agent_policy\"\n"
		tables             = "[attestation_agent.token_configs.kbs]\nurl = \"http://file-kbs:8080\"\n" +
			"[confidential_data_hub.kbc]\nname = \"cc_kbc\"\nurl = \"http://file-kbs:8080\"\n" +
			"[confidential_data_hub.image]\nwork_dir = \"/tmp/file-image\"\n"
		cmdline = "agent.aa_kbc_params=cc_kbc::http://cmdline-kbs:8080 agent.image_policy_file=kbs:///default/policy/1 agent.enable_signature_verification=true"
	)
	tests := []struct {
		name      string
		file      string // guestd.toml; "" for DefaultGuestd
		initdata  string // "" for none
		env       map[string]string
		aaURL     string // "" for no token_configs.kbs
		aaSource  string
		cdhURL    string
		cdhSource string
		workDir   string
		policyURI string
	}{
		{name: "defaults", aaURL: "http://cmdline-kbs:8080", aaSource: KeyAAKbcParams,
			cdhURL: "http://cmdline-kbs:8080", cdhSource: KeyAAKbcParams, workDir: DefaultImageWorkDir, policyURI: "kbs:///default/policy/1"},
		{name: "tables", file: tables, aaURL: "http://file-kbs:8080", aaSource: "guestd.toml [attestation_agent]",
			cdhURL: "http://file-kbs:8080", cdhSource: "guestd.toml [confidential_data_hub]", workDir: "/tmp/file-image"},
		{name: "initdata wins over tables", file: tables, initdata: initdataBoth,
			aaURL: "http://initdata-kbs:8080", aaSource: "initdata aa.toml",
			cdhURL: "http://initdata-kbs:8080", cdhSource: "initdata cdh.toml", workDir: DefaultImageWorkDir, policyURI: "kbs:///default/policy/1"},
		{name: "initdata without configs", file: tables, initdata: initdataPolicyOnly, aaURL: "http://file-kbs:8080", aaSource: "guestd.toml [attestation_agent]",
			cdhURL: "http://file-kbs:8080", cdhSource: "guestd.toml [confidential_data_hub]", workDir: "/tmp/file-image"},
		{name: "environment on top of a table", file: tables, env: map[string]string{EnvAAKbcParams: "cc_kbc::http://env-kbs:8080", EnvRustLog: "debug"},
			aaURL: "http://file-kbs:8080", aaSource: "guestd.toml [attestation_agent]",
			cdhURL: "http://env-kbs:8080", cdhSource: "guestd.toml [confidential_data_hub]", workDir: "/tmp/file-image"},
		{name: "only the AA table", file: "[attestation_agent]\n", aaSource: "guestd.toml [attestation_agent]",
			cdhURL: "http://cmdline-kbs:8080", cdhSource: KeyAAKbcParams, workDir: DefaultImageWorkDir, policyURI: "kbs:///default/policy/1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := DefaultGuestd()
			if tt.file != "" {
				var err error
				if g, err = ParseGuestd("guestd.toml", []byte(tt.file)); err != nil {
					t.Fatal(err)
				}
			}
			var initdata *Initdata
			if tt.initdata != "" {
				var err error
				if initdata, err = ParseInitdata([]byte(tt.initdata)); err != nil {
					t.Fatal(err)
				}
			}
			env := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
			cmd, err := ParseCmdline(cmdline)
			if err != nil {
				t.Fatal(err)
			}
			aa, src, err := g.ResolveAA(initdata, cmd, env)
			if err != nil {
				t.Fatal(err)
			}
			gotURL := ""
			if aa.TokenConfigs.KBS != nil {
				gotURL = aa.TokenConfigs.KBS.URL
			}
			if gotURL != tt.aaURL || src != tt.aaSource {
				t.Errorf("AA: kbs %q from %q, want %q from %q", gotURL, src, tt.aaURL, tt.aaSource)
			}
			if want := tt.env[EnvRustLog]; want != "" && aa.Log.Level != want {
				t.Errorf("AA log level %q, want %q from %s", aa.Log.Level, want, EnvRustLog)
			}
			cdh, src, err := g.ResolveCDH(initdata, cmd, env)
			if err != nil {
				t.Fatal(err)
			}
			if cdh.KBC.URL != tt.cdhURL || src != tt.cdhSource {
				t.Errorf("CDH: kbc %q from %q, want %q from %q", cdh.KBC.URL, src, tt.cdhURL, tt.cdhSource)
			}
			if cdh.Image.WorkDir != tt.workDir || cdh.Image.ImageSecurityPolicyURI != tt.policyURI {
				t.Errorf("CDH image: work dir %q policy %q, want %q and %q", cdh.Image.WorkDir, cdh.Image.ImageSecurityPolicyURI, tt.workDir, tt.policyURI)
			}
		})
	}
}

// TestGuestdResolveKeepsTheFile checks that resolving (which applies the
// environment and cdh.kbs_resources) does not change the parsed file.
func TestGuestdResolveKeepsTheFile(t *testing.T) {
	g, err := ParseGuestd("guestd.toml", []byte("[attestation_agent]\n[confidential_data_hub.kbc]\nname = \"offline_fs_kbc\"\n"+
		"[[confidential_data_hub.credentials]]\nresource_uri = \"kbs:///default/a/b\"\npath = \"/run/confidential-containers/cdh/kbs/a\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := ParseCmdline("cdh.kbs_resources=kbs:///default/c/d::/run/confidential-containers/cdh/kbs/c")
	if err != nil {
		t.Fatal(err)
	}
	env := func(k string) (string, bool) { return "warn", k == EnvRustLog }
	for range 2 {
		aa, _, err := g.ResolveAA(nil, cmd, env)
		if err != nil {
			t.Fatal(err)
		}
		cdh, _, err := g.ResolveCDH(nil, cmd, env)
		if err != nil {
			t.Fatal(err)
		}
		if aa.Log.Level != "warn" || len(cdh.Credentials) != 2 {
			t.Fatalf("resolved: log %q, %d credentials; want warn and 2", aa.Log.Level, len(cdh.Credentials))
		}
	}
	if g.AA.Log.Level != DefaultLogLevel || len(g.CDH.Credentials) != 1 {
		t.Errorf("the parsed file changed: log %q, %d credentials", g.AA.Log.Level, len(g.CDH.Credentials))
	}
}
