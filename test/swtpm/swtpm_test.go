package swtpm

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// getRandom sends TPM2_GetRandom(8) on a fresh connection and returns the
// response code and the random bytes.
func getRandom(t *testing.T, sock string) (uint32, []byte) {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	// tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8.
	cmd := []byte{0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8}
	if _, err := c.Write(cmd); err != nil {
		t.Fatalf("write GetRandom: %v", err)
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatalf("read response header: %v", err)
	}
	size := binary.BigEndian.Uint32(hdr[2:6])
	rc := binary.BigEndian.Uint32(hdr[6:10])
	if size < 10 || size > 4096 {
		t.Fatalf("response size %d", size)
	}
	body := make([]byte, size-10)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read response body: %v", err)
	}
	if rc != 0 {
		return rc, nil
	}
	if len(body) < 2 || int(binary.BigEndian.Uint16(body)) != len(body)-2 {
		t.Fatalf("malformed TPM2B_DIGEST in response %x", body)
	}
	return rc, body[2:]
}

func TestStartServesTPM2Commands(t *testing.T) {
	p := Start(t)
	if !strings.HasPrefix(p.Device(), "unix:") || strings.TrimPrefix(p.Device(), "unix:") != p.Socket {
		t.Fatalf("Device() = %q, want unix:%s", p.Device(), p.Socket)
	}
	// startup-clear means no TPM2_Startup is needed before commands.
	rc, r1 := getRandom(t, p.Socket)
	if rc != 0 {
		t.Fatalf("GetRandom: response code %#x\n%s", rc, p.Output())
	}
	// A second connection works too: swtpm serves clients one after another.
	_, r2 := getRandom(t, p.Socket)
	if len(r1) != 8 || bytes.Equal(r1, r2) {
		t.Fatalf("GetRandom returned %x then %x, want two different 8-byte values", r1, r2)
	}
}

func TestStopAndRestartOnSameState(t *testing.T) {
	p := Start(t)
	pid := p.proc.PID()
	if err := p.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	select {
	case <-p.proc.Exited():
	default:
		t.Fatalf("swtpm pid %d still running after Stop", pid)
	}
	if c, err := net.DialTimeout("unix", p.Socket, time.Second); err == nil {
		c.Close()
		t.Fatalf("socket %s still accepts after Stop", p.Socket)
	}

	q := StartState(t, p.StateDir)
	if q.proc.PID() == pid {
		t.Fatalf("restart reused pid %d", pid)
	}
	if rc, _ := getRandom(t, q.Socket); rc != 0 {
		t.Fatalf("GetRandom after restart: response code %#x\n%s", rc, q.Output())
	}
}

func TestParallelInstancesAreIndependent(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Socket == b.Socket || a.StateDir == b.StateDir {
		t.Fatalf("two instances share paths: %+v %+v", a, b)
	}
	for _, p := range []*TPM{a, b} {
		if rc, _ := getRandom(t, p.Socket); rc != 0 {
			t.Fatalf("GetRandom on %s: response code %#x", p.Socket, rc)
		}
	}
}
