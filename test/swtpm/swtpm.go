package swtpm

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/test/child"
)

// startTimeout bounds how long Start waits for the command socket.
const startTimeout = 15 * time.Second

// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 5 * time.Second

// TPM is one running swtpm process.
type TPM struct {
	// Socket is the path of the TPM command socket (unix stream); empty
	// for StartForQEMU.
	Socket string
	// Ctrl is the path of the swtpm control socket.
	Ctrl string
	// StateDir holds the TPM's persistent state (NV, seeds, persistent
	// objects). Starting another swtpm on it resumes that state.
	StateDir string

	proc   *child.Process
	stderr *lockedBuffer
}

// Device returns the device string the TPM attester takes for this TPM:
// "unix:" followed by the command socket path.
func (p *TPM) Device() string { return "unix:" + p.Socket }

// Start starts a fresh swtpm whose state lives in a new t.TempDir and stops
// it when the test ends.
func Start(t testing.TB) *TPM {
	t.Helper()
	return StartState(t, t.TempDir())
}

// StartState starts swtpm on stateDir, which may hold the state of an
// earlier, stopped swtpm, and stops it when the test ends. Two swtpm
// processes must not share a state directory at the same time.
func StartState(t testing.TB, stateDir string) *TPM {
	t.Helper()
	return start(t, stateDir, false)
}

// StartForQEMU starts swtpm on stateDir with only the control socket
// (Ctrl), for QEMU's TPM emulator backend (-chardev socket,path=Ctrl
// -tpmdev emulator), which initialises it and passes it the command
// channel. swtpm exits when QEMU disconnects (--terminate), so start one
// per boot; it is also stopped when the test ends. Socket is empty.
func StartForQEMU(t testing.TB, stateDir string) *TPM {
	t.Helper()
	return start(t, stateDir, true)
}

func start(t testing.TB, stateDir string, forQEMU bool) *TPM {
	t.Helper()
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		t.Fatalf("swtpm is not installed (%v); install it with: apt-get install swtpm swtpm-tools", err)
	}
	// Unix socket paths are limited to 108 bytes, and t.TempDir paths grow
	// with the test name, so the sockets get their own short directory.
	sockDir, err := os.MkdirTemp("", "swtpm")
	if err != nil {
		t.Fatalf("create swtpm socket directory: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(sockDir) })

	p := &TPM{
		Ctrl:     filepath.Join(sockDir, "ctrl.sock"),
		StateDir: stateDir,
		stderr:   &lockedBuffer{},
	}
	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + stateDir, "--ctrl", "type=unixio,path=" + p.Ctrl}
	if forQEMU {
		args = append(args, "--terminate")
	} else {
		p.Socket = filepath.Join(sockDir, "tpm.sock")
		args = append(args, "--server", "type=unixio,path="+p.Socket, "--flags", "not-need-init,startup-clear")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = p.stderr
	cmd.Stderr = p.stderr
	if p.proc, err = child.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Stop(); err != nil {
			t.Errorf("stop swtpm (pid %d): %v", p.proc.PID(), err)
		}
	})
	if err := p.waitReady(); err != nil {
		t.Fatalf("swtpm (pid %d) did not come up: %v\nswtpm output:\n%s", p.proc.PID(), err, p.stderr.String())
	}
	return p
}

// ProvisionAK opens the TPM attester on this swtpm, which creates the
// attestation key and persists it at the default handle if there is none
// (as a cloud provider provisions a vTPM's AK), and returns the AK's
// public key PEM for a verifier's trust list. swtpm serves one client at a
// time: the attester is closed again before ProvisionAK returns.
func (p *TPM) ProvisionAK(t testing.TB) []byte {
	t.Helper()
	a, err := tpm.Open(context.Background(), tpm.Options{Device: p.Device()})
	if err != nil {
		t.Fatalf("provision the AK of swtpm (pid %d): %v", p.proc.PID(), err)
	}
	pem := a.AKPublicPEM()
	if err := a.Close(); err != nil {
		t.Fatalf("provision the AK of swtpm (pid %d): %v", p.proc.PID(), err)
	}
	return pem
}

// waitReady polls the command socket until it accepts a connection, or,
// for QEMU, until the control socket exists (a connection to it would be
// taken for QEMU's).
func (p *TPM) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-p.proc.Exited():
			return fmt.Errorf("swtpm exited: %v", p.proc.Err())
		default:
		}
		var err error
		if p.Socket == "" {
			_, err = os.Stat(p.Ctrl)
			if err == nil {
				return nil
			}
		} else {
			var c net.Conn
			if c, err = net.DialTimeout("unix", p.Socket, time.Second); err == nil {
				return c.Close()
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for swtpm's socket: %w", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates this swtpm (SIGTERM, then SIGKILL after a grace period)
// and waits for it to exit. It may be called more than once; the TPM state
// in StateDir stays for a later StartState.
func (p *TPM) Stop() error { return p.proc.Stop(stopTimeout) }

// Output returns what swtpm has written to stdout and stderr so far.
func (p *TPM) Output() string { return p.stderr.String() }

// lockedBuffer collects process output written from exec's copy goroutine
// while tests may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
