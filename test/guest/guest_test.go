package guest

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/guestd/guestd/agent/config"
)

func TestMain(m *testing.M) {
	RelayMain()
	os.Exit(m.Run())
}

// TestInitdataDisk: the disk image reads back with the reader kata's
// format is implemented by.
func TestInitdataDisk(t *testing.T) {
	doc := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"cdh.toml\" = '''\nsocket = \"x\"\n'''\n")
	p := InitdataDisk(t, t.TempDir(), doc)
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size()%512 != 0 {
		t.Fatalf("disk size %d is not a whole number of sectors", fi.Size())
	}
	got, err := config.ReadInitdataBlock(f, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, doc) {
		t.Fatalf("read back %q, want %q", got, doc)
	}
}

// TestRelay runs the test binary as QEMU runs a guestfwd command: the
// connection on stdin/stdout, the target in the environment. Bytes flow
// both ways, a half-close reaches the target, and the relay logs the
// connection and exits.
func TestRelay(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		c.Write([]byte("echo:" + line))
	}()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	guestSide := os.NewFile(uintptr(fds[0]), "guest")
	relaySide := os.NewFile(uintptr(fds[1]), "relay")
	log := filepath.Join(t.TempDir(), "relay.log")
	self, _ := os.Executable()
	cmd := exec.Command(self)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = relaySide, relaySide, relaySide
	cmd.Env = append(os.Environ(), relayEnv+"="+ln.Addr().String(), relayPortEnv+"=5000", relayLogEnv+"="+log)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	relaySide.Close()
	conn, err := net.FileConn(guestSide)
	if err != nil {
		t.Fatal(err)
	}
	guestSide.Close()
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	conn.(*net.UnixConn).CloseWrite()
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || reply != "echo:hello\n" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("relay exited with %v", err)
		}
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatal("relay did not exit after both sides closed")
	}
	b, err := os.ReadFile(log)
	if err != nil || strings.TrimSpace(string(b)) != "5000 "+ln.Addr().String() {
		t.Fatalf("relay log %q, %v", b, err)
	}
}

func TestTail(t *testing.T) {
	var b strings.Builder
	for i := range 10 {
		b.WriteString(strconv.Itoa(i) + "\n")
	}
	if got := tail(b.String(), 3); got != "7\n8\n9" {
		t.Fatalf("tail = %q", got)
	}
}
