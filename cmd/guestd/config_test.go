package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/agent/config"
)

// distConfig is the default config make install puts in /etc/guestd.
const distConfig = "../../dist/guestd.toml"

// TestDistConfig parses the installed default config: it serves kata's two
// sockets and the REST API on 127.0.0.1:8006 and takes the KBS from
// agent.aa_kbc_params (no AA or CDH table). With every commented example
// line uncommented it must still parse, without unknown keys, so the
// examples cannot rot either.
func TestDistConfig(t *testing.T) {
	g, err := config.LoadGuestd(distConfig)
	if err != nil {
		t.Fatal(err)
	}
	want := config.DefaultGuestd()
	want.Path = distConfig
	want.CDHSock = config.DefaultCDHSocket
	want.GRPC = []string{}
	if g.AttestationSock != config.DefaultAASocket || g.CDHSock != config.DefaultCDHSocket || g.REST != "127.0.0.1:8006" ||
		g.Cmdline != "/proc/cmdline" || g.AA != nil || g.CDH != nil || len(g.GRPC) != 0 || g.ExposeTEEKey || g.Tee != "" || len(g.Unknown) != 0 {
		t.Errorf("%s:\n got %+v\nwant %+v", distConfig, g, want)
	}

	data, err := os.ReadFile(distConfig)
	if err != nil {
		t.Fatal(err)
	}
	example := regexp.MustCompile(`(?m)^#(\[|[a-z_]+ = )`)
	if n := len(example.FindAll(data, -1)); n < 10 {
		t.Fatalf("only %d commented example lines in %s; did the comment style change?", n, distConfig)
	}
	uncommented := example.ReplaceAll(data, []byte("$1"))
	g, err = config.ParseGuestd("uncommented "+distConfig, uncommented)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Unknown) != 0 || g.AA == nil || g.CDH == nil || g.Tee == "" {
		t.Errorf("uncommented examples: unknown keys %v, AA table %v, CDH table %v, tee %q", g.Unknown, g.AA != nil, g.CDH != nil, g.Tee)
	}
}

// TestCheckConfig runs guestd check (as serve loads its configuration)
// with guestd's config file and flags: flags win over the file, the file
// over the defaults; -c, initdata's aa.toml and the file's table in that
// order for the AA; errors name their source.
func TestCheckConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cmdline := write("cmdline", "console=ttyS0 agent.aa_kbc_params=cc_kbc::http://cmdline-kbs:8080\n")
	file := write("guestd.toml", `
cmdline = "`+cmdline+`"
tee = "sample"
attestation_sock = "unix:///tmp/file-aa.sock"
rest = "127.0.0.1:9006"
rest_features = "all"
grpc = ["tcp://127.0.0.1:50001", "vsock://any:1100"]
expose_tee_key = true
[attestation_agent.token_configs.kbs]
url = "http://file-kbs:8080"
`)
	bare := write("bare.toml", "cmdline = \""+cmdline+"\"\n")
	aaFile := write("aa.toml", "[token_configs.kbs]\nurl = \"http://flag-kbs:8080\"\n")
	initdata := write("initdata.toml", "version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = '''\n[token_configs.kbs]\nurl = \"http://initdata-kbs:8080\"\n'''\n")
	unknown := write("unknown.toml", "cmdline = \""+cmdline+"\"\nlisten = \"tcp://127.0.0.1:1\"\n[attestation_agent]\nretries = 3\n")
	badGRPC := write("bad-grpc.toml", "cmdline = \""+cmdline+"\"\ngrpc = [\"vsock://any\"]\n")
	badAA := write("bad-aa.toml", "cmdline = \""+cmdline+"\"\n[attestation_agent.token_configs.kbs]\nurl = \"kbs:8080\"\n")

	tests := []struct {
		name    string
		args    []string
		want    func(e *effective) bool
		wantErr string // stderr fragment of a failing check
		warn    string // stderr fragment of a passing one
	}{
		{name: "file", args: []string{"--config", file}, want: func(e *effective) bool {
			return e.Config == file && e.Tee == "sample" && e.Serve.AttestationSock == "unix:///tmp/file-aa.sock" &&
				e.Serve.CDHSock == config.DefaultCDHSocket && e.Serve.REST == "127.0.0.1:9006" && e.Serve.RESTFeatures == "all" &&
				slices.Equal(e.Serve.GRPC, []string{"tcp://127.0.0.1:50001", "vsock://any:1100"}) && e.Serve.ExposeTEEKey &&
				e.AA.TokenConfigs.KBS.URL == "http://file-kbs:8080" && e.AAFrom == file+" [attestation_agent]" &&
				e.CDH.KBC.URL == "http://cmdline-kbs:8080" && e.CDHFrom == config.KeyAAKbcParams
		}},
		{name: "flags win", args: []string{"--config", file, "--attestation_sock", "unix:///tmp/flag-aa.sock", "--rest", "", "--rest-features", "resource",
			"--grpc", "unix:///tmp/flag-grpc.sock", "--expose-tee-key=false", "--cdh-sock", "unix:///tmp/flag-cdh.sock", "-c", aaFile}, want: func(e *effective) bool {
			return e.Serve.AttestationSock == "unix:///tmp/flag-aa.sock" && e.Serve.REST == "" && e.Serve.RESTFeatures == "resource" &&
				slices.Equal(e.Serve.GRPC, []string{"unix:///tmp/flag-grpc.sock"}) && !e.Serve.ExposeTEEKey && e.Serve.CDHSock == "unix:///tmp/flag-cdh.sock" &&
				e.AA.TokenConfigs.KBS.URL == "http://flag-kbs:8080" && e.AAFrom == aaFile
		}},
		{name: "initdata wins over the table", args: []string{"--config", file, "--initdata-toml", initdata}, want: func(e *effective) bool {
			return e.AA.TokenConfigs.KBS.URL == "http://initdata-kbs:8080" && e.AAFrom == "initdata aa.toml" && e.Initdata != nil && e.Initdata.File == initdata
		}},
		{name: "-c wins over initdata", args: []string{"--config", file, "--initdata-toml", initdata, "-c", aaFile}, want: func(e *effective) bool {
			return e.AA.TokenConfigs.KBS.URL == "http://flag-kbs:8080" && e.AAFrom == aaFile
		}},
		{name: "defaults of a bare file", args: []string{"--config", bare, "--tee", "sample"}, want: func(e *effective) bool {
			return e.Serve.AttestationSock == config.DefaultAASocket && e.Serve.CDHSock == config.DefaultCDHSocket && e.Serve.REST == config.DefaultREST &&
				e.Serve.RESTFeatures == "resource" && len(e.Serve.GRPC) == 0 && e.AA.TokenConfigs.KBS.URL == "http://cmdline-kbs:8080" && e.AAFrom == config.KeyAAKbcParams
		}},
		{name: "unknown keys warn", args: []string{"--config", unknown, "--tee", "sample"}, warn: `key=attestation_agent.retries`,
			want: func(e *effective) bool { return e.Config == unknown }},
		{name: "--config= reads no file", args: []string{"--config=", "--tee", "sample"},
			want: func(e *effective) bool { return e.Config == "" }},
		{name: "missing file", args: []string{"--config", filepath.Join(dir, "missing.toml")}, wantErr: "missing.toml"},
		{name: "bad gRPC address", args: []string{"--config", badGRPC, "--tee", "sample"}, wantErr: `grpc: listen address "vsock://any"`},
		{name: "bad AA table", args: []string{"--config", badAA, "--tee", "sample"}, wantErr: "attestation_agent.token_configs.kbs.url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := dispatch(context.Background(), "guestd", append([]string{"check"}, tt.args...), &stdout, &stderr, func(string) (string, bool) { return "", false })
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr.String(), tt.wantErr) {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.wantErr)
				}
				return
			}
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			var e effective
			if err := json.Unmarshal(stdout.Bytes(), &e); err != nil {
				t.Fatal(err)
			}
			if !tt.want(&e) {
				t.Errorf("effective configuration:\n%s", stdout.String())
			}
			if !strings.Contains(stderr.String(), tt.warn) {
				t.Errorf("stderr %q does not say %q", stderr.String(), tt.warn)
			}
		})
	}
}

// TestKataGRPCEnvBadAddress checks that a bad GUESTD_GRPC stops kata's
// names before they listen on anything, naming the variable.
func TestKataGRPCEnvBadAddress(t *testing.T) {
	dir := t.TempDir()
	cmdline := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(cmdline, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"attestation-agent", "confidential-data-hub"} {
		t.Run(name, func(t *testing.T) {
			env := map[string]string{"GUESTD_TEE": "sample", envGRPC: "tcp://127.0.0.1:0, vsock://any"}
			var stderr bytes.Buffer
			code := dispatch(context.Background(), name, []string{"--cmdline", cmdline}, &stderr, &stderr,
				func(k string) (string, bool) { v, ok := env[k]; return v, ok })
			if code != 1 || !strings.Contains(stderr.String(), envGRPC+`: listen address "vsock://any"`) {
				t.Fatalf("exit %d, stderr %q", code, stderr.String())
			}
		})
	}
}

// TestNotify checks the sd_notify datagrams guestd sends systemd.
func TestNotify(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	abstract := "@guestd-test-" + filepath.Base(dir)
	aconn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "\x00" + abstract[1:], Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer aconn.Close()
	tests := []struct {
		name    string
		env     string
		conn    *net.UnixConn
		wantErr bool
	}{
		{"path", sock, conn, false},
		{"abstract", abstract, aconn, false},
		{"unset", "", nil, false},
		{"not a unix socket", "vsock:2:1", nil, true},
		{"nobody listening", filepath.Join(dir, "none"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := notify(func(k string) (string, bool) { return tt.env, k == "NOTIFY_SOCKET" && tt.env != "" }, "READY=1")
			if (err != nil) != tt.wantErr {
				t.Fatalf("notify: %v", err)
			}
			if tt.conn == nil {
				return
			}
			buf := make([]byte, 64)
			tt.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := tt.conn.Read(buf)
			if err != nil || string(buf[:n]) != "READY=1" {
				t.Fatalf("received %q, %v", buf[:n], err)
			}
		})
	}
}
