package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/api/keyproviderpb"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// proc is a guestd process a test started.
type proc struct {
	cmd    *exec.Cmd
	lines  chan string
	exited chan error
}

func startProc(t *testing.T, bin string, env []string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, lines: make(chan string, 256), exited: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	return p
}

// waitFor returns the first submatch of re in the process's log.
func (p *proc) waitFor(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case line := <-p.lines:
			if m := re.FindStringSubmatch(line); m != nil {
				if len(m) > 1 {
					return m[1]
				}
				return m[0]
			}
		case err := <-p.exited:
			t.Fatalf("%s exited: %v", p.cmd.Path, err)
		case <-deadline:
			t.Fatalf("%s: no log line matching %s", p.cmd.Path, re)
		}
	}
}

func (p *proc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Errorf("%s after SIGTERM: %v", filepath.Base(p.cmd.Path), err)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("%s did not stop on SIGTERM", filepath.Base(p.cmd.Path))
	}
}

func waitSocket(t *testing.T, path string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never accepted", path)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestKataLaunchPlan starts the binary under kata's three names with
// upstream's flags, in kata's order (attestation-agent, wait for its
// socket, confidential-data-hub, wait for cdh.sock, api-server-rest), and
// uses each the way kata and workloads do. GUESTD_GRPC makes the agent and
// the data hub also serve their services over gRPC (the guest tests use
// vsock; here unix and tcp).
func TestKataLaunchPlan(t *testing.T) {
	dir, err := os.MkdirTemp("", "kata")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	repo := filepath.Join(dir, "repo")
	os.MkdirAll(filepath.Join(repo, "default", "key"), 0o700)
	os.WriteFile(filepath.Join(repo, "default", "key", "1"), []byte("resource-one"), 0o600)
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(),
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})

	for _, name := range []string{"attestation-agent", "confidential-data-hub", "api-server-rest"} {
		if err := os.Symlink(guestdBin, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	aaSock, cdhSock := filepath.Join(dir, "aa.sock"), filepath.Join(dir, "cdh.sock")
	aaConf, cdhConf := filepath.Join(dir, "aa.toml"), filepath.Join(dir, "cdh.toml")
	os.WriteFile(aaConf, []byte(fmt.Sprintf("[token_configs.kbs]\nurl = %q\n", k.URL)), 0o600)
	os.WriteFile(cdhConf, []byte(fmt.Sprintf("socket = %q\n[aa]\naa_socket = %q\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n[image]\nwork_dir = %q\n",
		"unix://"+cdhSock, "unix://"+aaSock, k.URL, filepath.Join(dir, "work"))), 0o600)
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyS0\n"), 0o644)
	env := []string{"GUESTD_TEE=sample", "OCICRYPT_KEYPROVIDER_CONFIG=/etc/ocicrypt_config.json"}

	aaGRPCSock, cdhGRPCSock := filepath.Join(dir, "aa-grpc.sock"), filepath.Join(dir, "cdh-grpc.sock")
	aa := startProc(t, filepath.Join(dir, "attestation-agent"), append(env, envGRPC+"=unix://"+aaGRPCSock+", tcp://127.0.0.1:0"),
		"--attestation_sock", "unix://"+aaSock, "-c", aaConf, "--cmdline", cmdline)
	aaGRPCAddr := aa.waitFor(t, regexp.MustCompile(`"gRPC listening" addr=(127\.0\.0\.1:\d+)`))
	waitSocket(t, aaSock)
	cdh := startProc(t, filepath.Join(dir, "confidential-data-hub"), append(env, envGRPC+"=unix://"+cdhGRPCSock),
		"-c", cdhConf, "--cmdline", cmdline)
	waitSocket(t, cdhSock)
	asr := startProc(t, filepath.Join(dir, "api-server-rest"), env,
		"--features", "all", "--bind", "127.0.0.1:0", "--aa_addr", "unix://"+aaSock, "--cdh_addr", "unix://"+cdhSock)
	restAddr := asr.waitFor(t, regexp.MustCompile(`"REST API listening" addr=(\S+)`))

	ctx := context.Background()
	ev, err := aapb.NewTTRPCAttestationAgentServiceClient(ttrpcClient(t, aaSock)).GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: []byte("x")})
	if err != nil || !strings.Contains(string(ev.Evidence), `"report_data":"eA=="`) {
		t.Fatalf("GetEvidence on the AA socket = %s, %v", ev.GetEvidence(), err)
	}
	res, err := cdhpb.NewTTRPCGetResourceServiceClient(ttrpcClient(t, cdhSock)).GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	if err != nil || string(res.Resource) != "resource-one" {
		t.Fatalf("GetResource on cdh.sock = %q, %v", res.GetResource(), err)
	}
	// The AA socket serves only the AA; cdh.sock only the data hub.
	if _, err := cdhpb.NewTTRPCGetResourceServiceClient(ttrpcClient(t, aaSock)).GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"}); err == nil {
		t.Fatal("the AA socket served GetResource")
	}
	// GUESTD_GRPC: the agent serves the AA alone, the data hub the CDH and
	// the keyprovider.
	dialGRPC := func(target string) *grpc.ClientConn {
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	waitSocket(t, aaGRPCSock)
	waitSocket(t, cdhGRPCSock)
	for _, target := range []string{aaGRPCAddr, "unix://" + aaGRPCSock} {
		conn := dialGRPC(target)
		tee, err := aapb.NewAttestationAgentServiceClient(conn).GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
		if err != nil || tee.Tee != "sample" {
			t.Fatalf("gRPC GetTeeType at %s = %v, %v", target, tee, err)
		}
		if _, err := cdhpb.NewGetResourceServiceClient(conn).GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"}); status.Code(err) != codes.Unimplemented {
			t.Fatalf("gRPC GetResource at the agent's %s: %v, want Unimplemented", target, err)
		}
	}
	cdhConn := dialGRPC("unix://" + cdhGRPCSock)
	gres, err := cdhpb.NewGetResourceServiceClient(cdhConn).GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	if err != nil || string(gres.Resource) != "resource-one" {
		t.Fatalf("gRPC GetResource at the data hub = %q, %v", gres.GetResource(), err)
	}
	_, err = keyproviderpb.NewKeyProviderServiceClient(cdhConn).UnWrapKey(ctx, &keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte("{}")})
	if code := status.Code(err); code == codes.Unimplemented || code == codes.OK {
		t.Fatalf("gRPC UnWrapKey of nothing at the data hub: %v, want a refusal by the keyprovider", err)
	}
	if _, err := aapb.NewAttestationAgentServiceClient(cdhConn).GetTeeType(ctx, &aapb.GetTeeTypeRequest{}); status.Code(err) != codes.Unimplemented {
		t.Fatalf("gRPC GetTeeType at the data hub: %v, want Unimplemented", err)
	}

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + restAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/cdh/resource/default/key/1"); code != 200 || body != "resource-one" {
		t.Fatalf("REST resource: %d %q", code, body)
	}
	if code, body := get("/aa/evidence?runtime_data=x"); code != 200 || !strings.Contains(body, `"report_data":"eA=="`) {
		t.Fatalf("REST evidence: %d %q", code, body)
	}
	if code, body := get("/info"); code != 200 || !strings.Contains(body, `"tee":"sample"`) {
		t.Fatalf("REST info: %d %q", code, body)
	}
	if code, body := get("/aa/token?token_type=kbs"); code != 200 || !strings.Contains(body, `"token"`) || strings.Contains(body, "PRIVATE") {
		t.Fatalf("REST token: %d %q", code, body)
	}
	asr.stop(t)
	cdh.stop(t)
	aa.stop(t)
	for _, sock := range []string{aaSock, cdhSock, aaGRPCSock, cdhGRPCSock} {
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after SIGTERM (%v)", sock, err)
		}
	}
}
