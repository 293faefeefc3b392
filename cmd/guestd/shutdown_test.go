package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
)

// stallProxy is a reverse proxy to a registry that sends the first
// stallAfter bytes of every blob larger than that, then holds the response
// until the client goes away: a pull through it is stuck mid-layer.
type stallProxy struct {
	*httptest.Server
	stalled chan string // receives the path of each blob once it stalls
}

func newStallProxy(t *testing.T, registryURL string, stallAfter int64) *stallProxy {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{stalled: make(chan string, 16)}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.FlushInterval = -1 // every write reaches the client at once
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method == http.MethodGet && resp.StatusCode == http.StatusOK && registry.AnyBlob(req.URL.Path) && resp.ContentLength > stallAfter {
			resp.Body = &stallReader{r: resp.Body, left: stallAfter, ctx: req.Context(), stalled: func() { p.stalled <- req.URL.Path }}
		}
		return nil
	}
	p.Server = httptest.NewServer(rp)
	t.Cleanup(p.Close)
	return p
}

func (p *stallProxy) host() string { return strings.TrimPrefix(p.URL, "http://") }

type stallReader struct {
	r       io.ReadCloser
	left    int64
	ctx     context.Context
	stalled func()
	once    sync.Once
}

func (s *stallReader) Read(b []byte) (int, error) {
	if s.left <= 0 {
		s.once.Do(s.stalled)
		<-s.ctx.Done()
		return 0, s.ctx.Err()
	}
	if int64(len(b)) > s.left {
		b = b[:s.left]
	}
	n, err := s.r.Read(b)
	s.left -= int64(n)
	return n, err
}

func (s *stallReader) Close() error { return s.r.Close() }

// TestShutdownDuringPull sends guestd serve SIGTERM while two pulls (one
// over ttRPC as kata makes them, one over gRPC) are stuck halfway through a
// layer, and checks that it exits promptly with status 0, that both calls
// fail as cancelled or unavailable, that nothing of either pull is left
// (no mount, no config.json, no half-applied layer, no spooled blob) and
// that its sockets are gone. It also checks that the image puller opens at
// the first pull, not at start-up.
func TestShutdownDuringPull(t *testing.T) {
	dir, err := os.MkdirTemp("", "gsd") // short: unix socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	reg := registry.Start(t, registry.Options{})
	images.Push(t, images.Big(t, 1, 24<<20), reg, "big/a:1")
	images.Push(t, images.Big(t, 1, 20<<20), reg, "big/b:1")
	proxy := newStallProxy(t, reg.URL, 4<<20)

	cmdline := filepath.Join(dir, "cmdline")
	if err := os.WriteFile(cmdline, []byte("console=ttyS0\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	aaSock, cdhSock, grpcSock := filepath.Join(dir, "aa.sock"), filepath.Join(dir, "cdh.sock"), filepath.Join(dir, "grpc.sock")
	workDir := filepath.Join(dir, "work")
	conf := filepath.Join(dir, "guestd.toml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `
tee = "sample"
cmdline = %q
attestation_sock = "unix://%s"
cdh_sock = "unix://%s"
rest = ""
grpc = ["unix://%s"]

[confidential_data_hub.kbc]
name = "offline_fs_kbc"

[confidential_data_hub.image]
work_dir = %q

[[confidential_data_hub.image.registry_config.registry]]
location = %q
insecure = true
`, cmdline, aaSock, cdhSock, grpcSock, workDir, proxy.host()), 0o600); err != nil {
		t.Fatal(err)
	}

	// guestd tells systemd when it is ready and when it stops.
	notifySock := filepath.Join(dir, "notify")
	notifications, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifySock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notifications.Close()
	expectNotify := func(want string) {
		t.Helper()
		buf := make([]byte, 64)
		notifications.SetReadDeadline(time.Now().Add(10 * time.Second))
		if n, err := notifications.Read(buf); err != nil || string(buf[:n]) != want {
			t.Fatalf("sd_notify: got %q (%v), want %q", buf[:n], err, want)
		}
	}

	d := startProc(t, guestdBin, []string{"NOTIFY_SOCKET=" + notifySock}, "serve", "--config", conf)
	d.waitFor(t, regexp.MustCompile(`guestd ready`))
	expectNotify("READY=1")
	if _, err := os.Stat(workDir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the image work dir exists before the first pull (%v): the puller opened at start-up", err)
	}

	ctx := context.Background()
	type result struct {
		via string
		err error
	}
	results := make(chan result, 2)
	bundleA, bundleB := filepath.Join(dir, "bundle-a"), filepath.Join(dir, "bundle-b")
	ttrpcConn := ttrpcClient(t, cdhSock)
	go func() {
		_, err := cdhpb.NewTTRPCImagePullServiceClient(ttrpcConn).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: proxy.host() + "/big/a:1", BundlePath: bundleA})
		results <- result{"ttRPC", err}
	}()
	grpcConn, err := grpc.NewClient("unix://"+grpcSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer grpcConn.Close()
	go func() {
		_, err := cdhpb.NewImagePullServiceClient(grpcConn).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: proxy.host() + "/big/b:1", BundlePath: bundleB})
		results <- result{"gRPC", err}
	}()

	// Both pulls stall mid-blob, with their layers being applied.
	for range 2 {
		select {
		case <-proxy.stalled:
		case r := <-results:
			t.Fatalf("the %s pull ended before stalling: %v", r.via, r.err)
		case <-time.After(60 * time.Second):
			t.Fatal("the pulls never reached the big layers")
		}
	}
	storeTmp := filepath.Join(workDir, "store", "tmp")
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if entries, _ := os.ReadDir(storeTmp); len(entries) == 2 {
			break
		}
		if time.Now().After(deadline) {
			entries, err := os.ReadDir(storeTmp)
			t.Fatalf("the layers are not being applied: %s holds %d entries (%v)", storeTmp, len(entries), err)
		}
	}

	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.exited:
		if err != nil {
			t.Fatalf("guestd after SIGTERM: %v, want exit status 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("guestd did not stop within 20 s of SIGTERM")
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("guestd took %v to stop", took)
	} else {
		t.Logf("guestd stopped %v after SIGTERM", took.Round(time.Millisecond))
	}
	expectNotify("STOPPING=1")
	for range 2 {
		select {
		case r := <-results:
			t.Logf("the %s pull: %v", r.via, r.err)
			code := status.Code(r.err)
			// guestd answers Canceled before it closes the connection; a
			// closed connection is the same failure, should the answer
			// lose the race.
			if code != codes.Canceled && code != codes.Unavailable && !errors.Is(r.err, ttrpc.ErrClosed) {
				t.Errorf("the %s pull: %v (code %s), want cancelled or unavailable", r.via, r.err, code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a pull call did not return after guestd exited")
		}
	}

	if mounts := mountsUnder(t, dir); len(mounts) != 0 {
		t.Errorf("left mounted: %v", mounts)
	}
	for _, b := range []string{bundleA, bundleB} {
		if _, err := os.Stat(filepath.Join(b, "config.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s/config.json exists (%v)", b, err)
		}
		if entries, err := os.ReadDir(filepath.Join(b, "rootfs")); err == nil && len(entries) > 0 {
			t.Errorf("%s/rootfs holds %d entries", b, len(entries))
		}
	}
	for _, sub := range []string{"store/tmp", "store/overlay", "store/meta/bundles", "store/layers", "spool"} {
		if entries, err := os.ReadDir(filepath.Join(workDir, sub)); err != nil || len(entries) != 0 {
			t.Errorf("%s: %d entries left (%v)", sub, len(entries), err)
		}
	}
	for _, sock := range []string{aaSock, cdhSock, grpcSock} {
		if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind (%v)", sock, err)
		}
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			t.Errorf("%s still accepts connections", sock)
		}
	}
}

// mountsUnder lists the mount points of this mount namespace under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mount-point ...
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			out = append(out, fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
