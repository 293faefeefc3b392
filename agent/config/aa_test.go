package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// The CA in upstream's config.example.{toml,json}, checked by its first and
// last lines.
const (
	exampleCertStart = "-----BEGIN CERTIFICATE-----\nMIIDljCCAn6gAwIBAgIUR/UNh13GFam4emgludtype/S9BIwDQYJKoZIhvcNAQEL\n"
	exampleCertEnd   = "M9QaC1mzQ/OStg==\n-----END CERTIFICATE-----\n"
)

func TestParseAAUpstreamFixtures(t *testing.T) {
	kbs := func(url, cert string) *KBSToken {
		return &KBSToken{URL: url, Cert: cert, TeeKeyAlgorithm: TeeKeyECDHP256}
	}
	coco := &CoCoASToken{URL: "http://127.0.0.1:8000"}
	defEventlog := EventlogConfig{InitPCR: 17, EnableEventlog: false}
	tests := []struct {
		file string
		want AA // Cert of the examples is checked separately
	}{
		{"config.example.toml", AA{TokenConfigs{kbs("https://127.0.0.1:8080", ""), coco}, defEventlog, Log{"info"}, nil}},
		{"config.example.json", AA{TokenConfigs{kbs("https://127.0.0.1:8080", ""), coco}, defEventlog, Log{"info"}, nil}},
		{"config1.toml", AA{TokenConfigs{kbs("https://127.0.0.1:8080", "cert"), coco}, defEventlog, Log{"warn"}, nil}},
		{"config2.toml", AA{TokenConfigs{kbs("https://127.0.0.1:8080", "cert"), nil}, defEventlog, Log{"warn"}, nil}},
		{"config3.toml", AA{TokenConfigs{kbs("https://127.0.0.1:8080", ""), coco}, defEventlog, Log{"warn"}, nil}},
		{"config4.toml", AA{TokenConfigs{}, defEventlog, Log{"warn"}, nil}},
		{"config5.toml", AA{TokenConfigs{}, defEventlog, Log{"info"}, nil}},
		{"config6.toml", AA{TokenConfigs{}, defEventlog, Log{"info"}, nil}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := LoadAA(filepath.Join("testdata", "aa", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(tt.file, "config.example") {
				if c := got.TokenConfigs.KBS.Cert; !strings.HasPrefix(c, exampleCertStart) || !strings.HasSuffix(strings.TrimRight(c, "\n")+"\n", exampleCertEnd) {
					t.Errorf("cert not read whole: %q", c)
				}
				got.TokenConfigs.KBS.Cert = ""
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Errorf("\n got %s\nwant %s", dumpAA(got), dumpAA(&tt.want))
			}
		})
	}
}

func dumpAA(a *AA) string {
	var b strings.Builder
	b.WriteString("{kbs:")
	if k := a.TokenConfigs.KBS; k != nil {
		b.WriteString(k.URL + " cert=" + quoteShort(k.Cert) + " alg=" + string(k.TeeKeyAlgorithm))
	} else {
		b.WriteString("nil")
	}
	b.WriteString(" coco_as:")
	if c := a.TokenConfigs.CoCoAS; c != nil {
		b.WriteString(c.URL)
	} else {
		b.WriteString("nil")
	}
	fmt.Fprintf(&b, " eventlog:%+v", a.EventlogConfig)
	b.WriteString(" log:" + a.Log.Level + " unknown:" + strings.Join(a.Unknown, ",") + "}")
	return b.String()
}

func TestParseAAValues(t *testing.T) {
	tests := []struct {
		name string
		file string
		doc  string
		want func(a *AA)
	}{
		{"algorithm P521", "aa.toml", "[token_configs.kbs]\nurl = \"http://kbs:8080\"\ntee_key_algorithm = \"ECDH-ES+A256KW-P521\"\n", func(a *AA) {
			a.TokenConfigs.KBS = &KBSToken{URL: "http://kbs:8080", TeeKeyAlgorithm: TeeKeyECDHP521}
		}},
		{"algorithm RSA", "aa.toml", "[token_configs.kbs]\nurl = \"http://kbs:8080\"\ntee_key_algorithm = \"RSA-OAEP-256\"\n", func(a *AA) {
			a.TokenConfigs.KBS = &KBSToken{URL: "http://kbs:8080", TeeKeyAlgorithm: TeeKeyRSAOAEP256}
		}},
		{"algorithm default", "aa.toml", "[token_configs.kbs]\nurl = \"http://kbs:8080\"\n", func(a *AA) {
			a.TokenConfigs.KBS = &KBSToken{URL: "http://kbs:8080", TeeKeyAlgorithm: TeeKeyECDHP256}
		}},
		{"eventlog partial", "aa.toml", "[eventlog_config]\nenable_eventlog = true\n", func(a *AA) {
			a.EventlogConfig = EventlogConfig{InitPCR: 17, EnableEventlog: true}
		}},
		{"eventlog pcr", "aa.toml", "[eventlog_config]\ninit_pcr = 0\n", func(a *AA) {
			a.EventlogConfig.InitPCR = 0
		}},
		{"eventlog pcr 23", "aa.toml", "eventlog_config = { init_pcr = 23 }\n", func(a *AA) {
			a.EventlogConfig.InitPCR = 23
		}},
		{"log directives", "aa.toml", "[log]\nlevel = \"debug,hyper=warn\"\n", func(a *AA) { a.Log.Level = "debug,hyper=warn" }},
		{"json cert null", "aa.json", `{"token_configs":{"kbs":{"url":"https://k","cert":null}},"eventlog_config":{"init_pcr":8,"enable_eventlog":true}}`, func(a *AA) {
			a.TokenConfigs.KBS = &KBSToken{URL: "https://k", TeeKeyAlgorithm: TeeKeyECDHP256}
			a.EventlogConfig = EventlogConfig{InitPCR: 8, EnableEventlog: true}
		}},
		{"uppercase JSON extension", "AA.JSON", `{"log":{"level":"error"}}`, func(a *AA) { a.Log.Level = "error" }},
		{"non-json extension is TOML", "attestation-agent.conf", "[log]\nlevel = \"trace\"\n", func(a *AA) { a.Log.Level = "trace" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseAA(tt.file, []byte(tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			want := DefaultAA()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %s\nwant %s", dumpAA(got), dumpAA(want))
			}
		})
	}
}

func TestParseAAMalformed(t *testing.T) {
	tests := []struct {
		name      string
		file      string
		doc       string
		key       string
		fragments []string
	}{
		{"kbs url missing", "aa.toml", "[token_configs.kbs]\ncert = \"x\"\n", "token_configs.kbs.url", []string{"required"}},
		{"kbs url not http", "aa.toml", "[token_configs.kbs]\nurl = \"kbs.example:8080\"\n", "token_configs.kbs.url", []string{"http(s) URL"}},
		{"kbs url wrong type", "aa.toml", "[token_configs.kbs]\nurl = 8080\n", "token_configs.kbs.url", []string{"expected a string", "integer 8080"}},
		{"kbs cert wrong type", "aa.toml", "[token_configs.kbs]\nurl = \"http://k\"\ncert = [\"a\"]\n", "token_configs.kbs.cert", []string{"expected a string"}},
		{"algorithm unknown", "aa.toml", "[token_configs.kbs]\nurl = \"http://k\"\ntee_key_algorithm = \"ECDH-ES+A256KW\"\n", "token_configs.kbs.tee_key_algorithm", []string{"ECDH-ES+A256KW-P256", "RSA-OAEP-256"}},
		{"algorithm pqc", "aa.toml", "[token_configs.kbs]\nurl = \"http://k\"\ntee_key_algorithm = \"ML-KEM-768+A192KW\"\n", "token_configs.kbs.tee_key_algorithm", []string{"ML-KEM"}},
		{"algorithm case", "aa.toml", "[token_configs.kbs]\nurl = \"http://k\"\ntee_key_algorithm = \"rsa-oaep-256\"\n", "token_configs.kbs.tee_key_algorithm", nil},
		{"kbs not a table", "aa.toml", "[token_configs]\nkbs = \"http://k\"\n", "token_configs.kbs", []string{"expected a table"}},
		{"token_configs not a table", "aa.toml", "token_configs = 1\n", "token_configs", []string{"expected a table"}},
		{"coco_as url missing", "aa.toml", "[token_configs.coco_as]\n", "token_configs.coco_as.url", []string{"required"}},
		{"coco_as url bad", "aa.toml", "[token_configs.coco_as]\nurl = \"/attestation\"\n", "token_configs.coco_as.url", []string{"http(s) URL"}},
		{"init_pcr string", "aa.toml", "[eventlog_config]\ninit_pcr = \"17\"\n", "eventlog_config.init_pcr", []string{"expected an integer", `"17"`}},
		{"init_pcr float", "aa.toml", "[eventlog_config]\ninit_pcr = 17.0\n", "eventlog_config.init_pcr", []string{"expected an integer"}},
		{"init_pcr negative", "aa.toml", "[eventlog_config]\ninit_pcr = -1\n", "eventlog_config.init_pcr", []string{"0 to 23"}},
		{"init_pcr too big", "aa.toml", "[eventlog_config]\ninit_pcr = 24\n", "eventlog_config.init_pcr", []string{"0 to 23"}},
		{"enable_eventlog string", "aa.toml", "[eventlog_config]\nenable_eventlog = \"true\"\n", "eventlog_config.enable_eventlog", []string{"true or false"}},
		{"log level bad", "aa.toml", "[log]\nlevel = \"verbose\"\n", "log.level", []string{"verbose"}},
		{"log level empty", "aa.toml", "[log]\nlevel = \"\"\n", "log.level", []string{"empty"}},
		{"log level bad directive", "aa.toml", "[log]\nlevel = \"info,hyper=loud\"\n", "log.level", []string{"hyper=loud"}},
		{"json url number", "aa.json", `{"token_configs":{"kbs":{"url":1}}}`, "token_configs.kbs.url", []string{"expected a string", "number"}},
		{"json pcr fraction", "aa.json", `{"eventlog_config":{"init_pcr":1.5}}`, "eventlog_config.init_pcr", []string{"expected an integer"}},
		{"json pcr huge", "aa.json", `{"eventlog_config":{"init_pcr":1e30}}`, "eventlog_config.init_pcr", []string{"expected an integer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := ParseAA(tt.file, []byte(tt.doc))
			if a != nil {
				t.Error("got a config along with the error")
			}
			wantKeyError(t, err, tt.key, tt.fragments...)
			if !strings.Contains(err.Error(), tt.file+": ") {
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

func TestParseAASyntaxErrors(t *testing.T) {
	tests := []struct{ file, doc, frag string }{
		{"aa.toml", "[token_configs\n", "invalid TOML"},
		{"aa.toml", "a = 1\na = 2\n", "invalid TOML"},
		{"aa.toml", "level = \"\xff\"\n", "invalid TOML"},
		{"aa.json", `{"log":`, "invalid JSON"},
		{"aa.json", `[1,2]`, "must be an object"},
		{"aa.json", `null`, "must be an object"},
		{"aa.json", `{} {}`, "after the top-level object"},
		{"aa.json", ``, "invalid JSON"},
	}
	for _, tt := range tests {
		_, err := ParseAA(tt.file, []byte(tt.doc))
		if err == nil || !strings.Contains(err.Error(), tt.frag) || !strings.Contains(err.Error(), tt.file) {
			t.Errorf("ParseAA(%s, %q): got %v, want an error naming the file and %q", tt.file, tt.doc, err, tt.frag)
		}
	}
}

func TestParseAAUnknownKeys(t *testing.T) {
	toml := `
typo_top = 1
[token_configs.kbs]
url = "http://k"
uri = "http://typo"
[token_configs.kbs.extra]
deep = true
[token_configs.other]
x = 1
[eventlog_config]
init_pcrs = 3
[log]
level = "info"
format = "json"
"dotted.key" = 1
`
	a, err := ParseAA("aa.toml", []byte(toml))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"eventlog_config.init_pcrs",
		`log."dotted.key"`,
		"log.format",
		"token_configs.kbs.extra",
		"token_configs.kbs.uri",
		"token_configs.other",
		"typo_top",
	}
	if !reflect.DeepEqual(a.Unknown, want) {
		t.Errorf("unknown keys\n got %q\nwant %q", a.Unknown, want)
	}
	if a.TokenConfigs.KBS == nil || a.TokenConfigs.KBS.URL != "http://k" || a.EventlogConfig.InitPCR != 17 {
		t.Errorf("known keys not read: %s", dumpAA(a))
	}

	j, err := ParseAA("aa.json", []byte(`{"token_configs":{"kbs":{"url":"http://k","URL":"x"}},"Log":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Log", "token_configs.kbs.URL"}; !reflect.DeepEqual(j.Unknown, want) {
		t.Errorf("JSON keys are case-sensitive: got %q, want %q", j.Unknown, want)
	}
}

func TestAAFromKbcParams(t *testing.T) {
	a := AAFromKbcParams(KbcParams{KBC: KBCCC, URI: "http://10.0.0.1:8080"})
	if a.TokenConfigs.KBS == nil || *a.TokenConfigs.KBS != (KBSToken{URL: "http://10.0.0.1:8080", TeeKeyAlgorithm: TeeKeyECDHP256}) {
		t.Errorf("cc_kbc: got %s", dumpAA(a))
	}
	if a.TokenConfigs.CoCoAS != nil || a.EventlogConfig != (EventlogConfig{InitPCR: 17}) || a.Log.Level != "info" {
		t.Errorf("cc_kbc defaults: got %s", dumpAA(a))
	}
	for _, kbc := range []string{KBCOfflineFS, KBCOfflineSEV} {
		if a := AAFromKbcParams(KbcParams{KBC: kbc, URI: "null"}); a.TokenConfigs.KBS != nil {
			t.Errorf("%s: KBS token config set", kbc)
		}
	}
}

func TestResolveAA(t *testing.T) {
	cmd, err := ParseCmdline("agent.aa_kbc_params=cc_kbc::http://cmdline:8080")
	if err != nil {
		t.Fatal(err)
	}
	file := writeFile(t, "aa.toml", "[token_configs.kbs]\nurl = \"https://file:8443\"\n[log]\nlevel = \"warn\"\n")

	a, err := ResolveAA("", cmd, nil)
	if err != nil || a.TokenConfigs.KBS == nil || a.TokenConfigs.KBS.URL != "http://cmdline:8080" {
		t.Errorf("no file: got %v, %+v", err, a)
	}
	a, err = ResolveAA("", nil, nil)
	if err != nil || a.TokenConfigs.KBS != nil {
		t.Errorf("no file, no cmdline: got %v, %+v", err, a)
	}
	a, err = ResolveAA(file, cmd, nil)
	if err != nil || a.TokenConfigs.KBS.URL != "https://file:8443" || a.Log.Level != "warn" {
		t.Errorf("file ignores aa_kbc_params: got %v, %+v", err, a)
	}
	a, err = ResolveAA(file, cmd, envMap(map[string]string{"RUST_LOG": "debug"}))
	if err != nil || a.Log.Level != "debug" || a.Log.SlogLevel() != slog.LevelDebug {
		t.Errorf("RUST_LOG wins: got %v, %+v", err, a)
	}
	_, err = ResolveAA(file, cmd, envMap(map[string]string{"RUST_LOG": "chatty"}))
	wantKeyError(t, err, EnvRustLog, SourceEnv)

	_, err = ResolveAA(filepath.Join(t.TempDir(), "nope.toml"), cmd, nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v", err)
	}
	bad := writeFile(t, "aa.toml", "[eventlog_config]\ninit_pcr = \"x\"\n")
	_, err = ResolveAA(bad, cmd, nil)
	wantKeyError(t, err, "eventlog_config.init_pcr", bad)
}

func TestLoadAATooLarge(t *testing.T) {
	big := writeFile(t, "aa.toml", "#"+strings.Repeat("x", maxConfigSize))
	if _, err := LoadAA(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("got %v", err)
	}
}

func TestSlogLevel(t *testing.T) {
	tests := []struct {
		level string
		want  slog.Level
	}{
		{"info", slog.LevelInfo},
		{"", slog.LevelInfo},
		{"DEBUG", slog.LevelDebug},
		{"warn", slog.LevelWarn},
		{"warning", slog.LevelWarn},
		{"error", slog.LevelError},
		{"trace", slog.LevelDebug - 4},
		{"hyper=trace,error", slog.LevelError},
		{"debug, warn", slog.LevelWarn},
		{"target=debug", slog.LevelInfo},
	}
	for _, tt := range tests {
		if got := (Log{Level: tt.level}).SlogLevel(); got != tt.want {
			t.Errorf("SlogLevel(%q) = %v, want %v", tt.level, got, tt.want)
		}
	}
	if off := (Log{Level: "off"}).SlogLevel(); off <= slog.LevelError {
		t.Errorf("off = %v, want above error", off)
	}
}
