package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// TestServe runs the built daemon with AA and CDH configs pointing at a
// test KBS, and talks to it the way kata does (ttRPC on the two sockets),
// plus gRPC and REST; every call shares one attestation; SIGTERM stops it.
func TestServe(t *testing.T) {
	dir, err := os.MkdirTemp("", "guestd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	repo := filepath.Join(dir, "repo")
	os.MkdirAll(filepath.Join(repo, "default", "key"), 0o700)
	os.WriteFile(filepath.Join(repo, "default", "key", "1"), []byte("resource-one"), 0o600)
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(),
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})

	aaConf := filepath.Join(dir, "aa.toml")
	os.WriteFile(aaConf, []byte(fmt.Sprintf("[token_configs.kbs]\nurl = %q\n", k.URL)), 0o600)
	cdhSock := filepath.Join(dir, "cdh.sock")
	cdhConf := filepath.Join(dir, "cdh.toml")
	os.WriteFile(cdhConf, []byte(fmt.Sprintf("socket = %q\n[kbc]\nname = \"cc_kbc\"\nurl = %q\n[image]\nwork_dir = %q\n",
		"unix://"+cdhSock, k.URL, filepath.Join(dir, "work"))), 0o600)
	cmdline := filepath.Join(dir, "cmdline")
	os.WriteFile(cmdline, []byte("console=ttyS0\n"), 0o644)
	aaSock := filepath.Join(dir, "aa.sock")

	d := startProc(t, guestdBin, nil, "serve", "--config=", "-c", aaConf, "--cdh-config", cdhConf, "--cmdline", cmdline, "--tee", "sample",
		"--attestation_sock", "unix://"+aaSock, "--rest", "127.0.0.1:0", "--rest-features", "all", "--grpc", "tcp://127.0.0.1:0")
	grpcAddr := d.waitFor(t, regexp.MustCompile(`"gRPC listening" addr=(\S+)`))
	restAddr := d.waitFor(t, regexp.MustCompile(`"REST API listening" addr=(\S+)`))
	d.waitFor(t, regexp.MustCompile(`guestd ready`))

	ctx := context.Background()
	aa := aapb.NewTTRPCAttestationAgentServiceClient(ttrpcClient(t, aaSock))
	ev, err := aa.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: []byte("hello")})
	if err != nil || !strings.Contains(string(ev.Evidence), `"report_data":"aGVsbG8="`) {
		t.Fatalf("GetEvidence = %s, %v", ev.GetEvidence(), err)
	}
	tee, err := aa.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
	if err != nil || tee.Tee != "sample" {
		t.Fatalf("GetTeeType = %v, %v", tee, err)
	}
	tok, err := aa.GetToken(ctx, &aapb.GetTokenRequest{TokenType: "kbs"})
	if err != nil || strings.Contains(string(tok.Token), "PRIVATE KEY") || !strings.Contains(string(tok.Token), `"token"`) {
		t.Fatalf("GetToken = %s, %v", tok.GetToken(), err)
	}
	cdh := cdhpb.NewTTRPCGetResourceServiceClient(ttrpcClient(t, cdhSock))
	res, err := cdh.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	if err != nil || string(res.Resource) != "resource-one" {
		t.Fatalf("GetResource = %q, %v", res.GetResource(), err)
	}
	if _, err := cdh.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/../x"}); err == nil {
		t.Fatal("GetResource accepted a bad URI")
	}
	// SecureMount reaches the secure mounter, which refuses a volume type
	// it does not support.
	sm := cdhpb.NewTTRPCSecureMountServiceClient(ttrpcClient(t, cdhSock))
	_, err = sm.SecureMount(ctx, &cdhpb.SecureMountRequest{VolumeType: "alibaba-cloud-oss", MountPoint: filepath.Join(dir, "oss")})
	if err == nil || !strings.Contains(err.Error(), `volume type "alibaba-cloud-oss"`) || strings.Contains(err.Error(), "no secure mounter") {
		t.Fatalf("SecureMount of an unsupported volume type: %v", err)
	}

	// REST on loopback.
	hr, err := http.Get("http://" + restAddr + "/cdh/resource/default/key/1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if hr.StatusCode != http.StatusOK || string(body) != "resource-one" {
		t.Fatalf("REST resource: %d %q", hr.StatusCode, body)
	}

	// gRPC on tcp.
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	gres, err := cdhpb.NewGetResourceServiceClient(conn).GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	if err != nil || string(gres.Resource) != "resource-one" {
		t.Fatalf("gRPC GetResource = %q, %v", gres.GetResource(), err)
	}

	// The AA token and the resources over ttRPC, REST and gRPC shared one
	// attestation.
	if s := k.Server.Stats(); s.Attest != 1 {
		t.Fatalf("KBS saw %d attestations, want 1", s.Attest)
	}

	d.stop(t)
}
