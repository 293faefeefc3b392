package agent

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Address
		err  string
	}{
		{"unix:///run/confidential-containers/cdh.sock", Address{Network: "unix", Path: "/run/confidential-containers/cdh.sock"}, ""},
		{"tcp://127.0.0.1:50000", Address{Network: "tcp", Host: "127.0.0.1:50000"}, ""},
		{"127.0.0.1:50002", Address{Network: "tcp", Host: "127.0.0.1:50002"}, ""},
		{"[::1]:8006", Address{Network: "tcp", Host: "[::1]:8006"}, ""},
		{"vsock://any:1024", Address{Network: "vsock", CID: vsockAnyCID, Port: 1024}, ""},
		{"vsock://-1:50000", Address{Network: "vsock", CID: vsockAnyCID, Port: 50000}, ""},
		{"vsock://3:1024", Address{Network: "vsock", CID: 3, Port: 1024}, ""},
		{"unix://relative.sock", Address{}, "absolute"},
		{"vsock://3", Address{}, "CID:PORT"},
		{"vsock://x:1", Address{}, "CID"},
		{"vsock://3:0", Address{}, "port"},
		{"http://127.0.0.1:1", Address{}, "want unix"},
		{"nonsense", Address{}, "want unix"},
	} {
		got, err := ParseAddress(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseAddress(%q) error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseAddress(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// TestListenUnix: the directory is created, a stale socket replaced, the
// socket is 0600, and a regular file in the way is not removed.
func TestListenUnix(t *testing.T) {
	dir, err := os.MkdirTemp("", "listen")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "sub", "a.sock")
	a := Address{Network: "unix", Path: path}
	ln, err := Listen(a)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close() // leaves a stale socket file
	ln, err = Listen(a)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v, %v", fi.Mode(), err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()

	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("keep"), 0o600)
	if _, err := Listen(Address{Network: "unix", Path: file}); err == nil || !strings.Contains(err.Error(), "non-socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Fatal("Listen removed a regular file")
	}
}
