package guest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/guestd/guestd/test/child"
)

// StartTPM starts swtpm on stateDir (which may hold the state of an
// earlier swtpm, e.g. one the test provisioned an AK in) with a control
// socket for QEMU's TPM emulator backend, and returns that socket. swtpm
// exits when QEMU disconnects (--terminate); it is also stopped by PID
// when the test ends. Start one per boot.
func StartTPM(t testing.TB, stateDir string) string {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (%v); install it with: apt-get install swtpm swtpm-tools", err)
	}
	// unix socket paths are short; t.TempDir paths grow with test names.
	sockDir, err := os.MkdirTemp("", "vtpm")
	if err != nil {
		t.Fatalf("swtpm socket dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })
	ctrl := filepath.Join(sockDir, "ctrl.sock")
	out := &bytes.Buffer{}
	cmd := exec.Command(bin, "socket", "--tpm2", "--tpmstate", "dir="+stateDir,
		"--ctrl", "type=unixio,path="+ctrl, "--terminate")
	cmd.Stdout, cmd.Stderr = out, out
	proc, err := child.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop(5 * time.Second) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(ctrl); err == nil {
			return ctrl
		}
		select {
		case <-proc.Exited():
			t.Fatalf("swtpm (pid %d) exited: %v\n%s", proc.PID(), proc.Err(), out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("swtpm (pid %d): %s did not appear", proc.PID(), ctrl)
		}
	}
}

// NewDisk creates a sparse raw disk image of size bytes for Options.Disks.
func NewDisk(t testing.TB, dir string, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("create disk %s: %v", p, err)
	}
	return p
}

// InitdataDisk writes doc as the initdata block device kata's runtime
// attaches: the magic "initdata", the gzip length as a little-endian
// uint64, the gzip bytes, zero padding to a 512-byte sector.
func InitdataDisk(t testing.TB, dir string, doc []byte) string {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(doc); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("initdata")
	_ = binary.Write(&b, binary.LittleEndian, uint64(z.Len()))
	b.Write(z.Bytes())
	if pad := b.Len() % 512; pad != 0 {
		b.Write(make([]byte, 512-pad))
	}
	p := filepath.Join(dir, "initdata.img")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatalf("write initdata disk: %v", err)
	}
	return p
}
