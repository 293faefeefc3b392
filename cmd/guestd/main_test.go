package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/containerd/ttrpc"
)

// guestdBin is the daemon, built once by TestMain as `make build` builds it.
var guestdBin string

func TestMain(m *testing.M) {
	// The ocicrypt client child process (see TestOcicryptClientHelper)
	// needs no daemon binary.
	if os.Getenv("GUESTD_OCICRYPT_CLIENT_FROM") != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "guestd-bin") // short: tests put sockets beside it
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	guestdBin = filepath.Join(dir, "guestd")
	build := exec.Command("go", "build", "-trimpath", "-tags", "containers_image_openpgp", "-ldflags", "-s -w", "-o", guestdBin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build guestd: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ttrpcClient connects to a ttRPC server on a unix socket for one test.
func ttrpcClient(t *testing.T, path string) *ttrpc.Client {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	cl := ttrpc.NewClient(c)
	t.Cleanup(func() { cl.Close() })
	return cl
}
