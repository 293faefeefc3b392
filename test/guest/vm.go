package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/test/child"
)

// Lines the guest's /init prints on the serial console.
const (
	ReadyLine  = "GUESTD-E2E READY"
	FailedLine = "GUESTD-E2E FAILED"
	DiedLine   = "GUESTD-E2E DIED"
)

// Guest-side addresses and ports fixed by the guest image.
const (
	// HostIP is the guest-side address of every Forward.
	HostIP = "10.0.2.100"
	// ProbePort is guestprobe's HTTP shell server.
	ProbePort = 8080
	// AAPort and CDHPort are the TCP ports guestprobe bridges to the
	// attestation agent's and the data hub's gRPC vsock listeners (vsock
	// ports 1100 and 1101, CID 1 through vsock_loopback).
	AAPort  = 1100
	CDHPort = 1101
)

// Forward makes Target (a host "127.0.0.1:PORT") reachable from the guest
// at HostIP:GuestPort, and nothing else on the host is.
type Forward struct {
	GuestPort int
	Target    string
}

// Options configures Boot.
type Options struct {
	// Kernel and Initrd default to ImageDir's vmlinuz and initrd.gz.
	Kernel, Initrd string
	// Append is added to the kernel command line.
	Append []string
	// MemoryMiB (default 1024) and CPUs (default 1). One vCPU: under
	// multi-threaded TCG a 2-vCPU guest once locked up with both CPUs
	// stuck in runc for minutes (soft lockup, RCU stalls), and one vCPU
	// measured as fast here (boot, pulls, 25 runc runs).
	MemoryMiB, CPUs int
	// Forwards are the guest's only routes out (guestfwd).
	Forwards []Forward
	// HostPorts are guest TCP ports exposed on 127.0.0.1 at free ports
	// (see VM.Addr). ProbePort is always exposed.
	HostPorts []int
	// TPM is an swtpm control socket (swtpm.StartForQEMU's Ctrl); empty:
	// no TPM.
	TPM string
	// Disks are raw image files attached as virtio disks, in order
	// (/dev/vda, /dev/vdb, ...).
	Disks []string
	// Timeout bounds the VM's life (default 6 minutes); QEMU is killed
	// when it passes.
	Timeout time.Duration
	// RelayLog, if set, gets one line per guest connection through a
	// Forward: "<guest port> <target>".
	RelayLog string
}

// VM is a running QEMU guest.
type VM struct {
	t       testing.TB
	name    string
	proc    *child.Process
	serial  string
	ports   map[int]int // guest port -> host port
	started time.Time
	timer   *time.Timer
}

// ImageDir is where `make guest-image` puts the kernel and the initramfs:
// $GUESTD_GUEST_IMAGE, else bin/guest at the repository root.
func ImageDir() (string, error) {
	if d := os.Getenv("GUESTD_GUEST_IMAGE"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "bin", "guest"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// qemuBinary is the QEMU the harness runs (Debian's qemu-system-x86).
const qemuBinary = "qemu-system-x86_64"

// Boot starts the guest and returns at once; WaitReady waits for /init.
// QEMU is killed when the test ends, and the serial log is copied to
// ArtifactDir when the test has failed. name labels the VM in logs and
// artifacts.
func Boot(t testing.TB, name string, opts Options) *VM {
	t.Helper()
	if opts.Kernel == "" || opts.Initrd == "" {
		dir, err := ImageDir()
		if err != nil {
			t.Fatalf("guest image: %v", err)
		}
		if opts.Kernel == "" {
			opts.Kernel = filepath.Join(dir, "vmlinuz")
		}
		if opts.Initrd == "" {
			opts.Initrd = filepath.Join(dir, "initrd.gz")
		}
	}
	for _, f := range []string{opts.Kernel, opts.Initrd} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("guest image: %v (build it with: make guest-image)", err)
		}
	}
	qemu, err := exec.LookPath(qemuBinary)
	if err != nil {
		t.Fatalf("%s is not installed (%v); install it with: apt-get install qemu-system-x86", qemuBinary, err)
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 1024
	}
	if opts.CPUs == 0 {
		opts.CPUs = 1
	}
	if opts.Timeout == 0 {
		opts.Timeout = 6 * time.Minute
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("guest: %v", err)
	}
	dir := t.TempDir()
	vm := &VM{t: t, name: name, serial: filepath.Join(dir, "serial.log"), ports: map[int]int{}}

	guestPorts := append([]int{ProbePort}, opts.HostPorts...)
	const attempts = 3
	for attempt := 1; ; attempt++ {
		netdev := []string{"user", "id=n0", "restrict=on"}
		for _, f := range opts.Forwards {
			if strings.ContainsAny(f.Target, ", ") || strings.ContainsAny(self, ", ") {
				t.Fatalf("guest: forward target %q or test binary path %q contains a comma or space", f.Target, self)
			}
			env := []string{relayEnv + "=" + f.Target, relayPortEnv + "=" + strconv.Itoa(f.GuestPort)}
			if opts.RelayLog != "" {
				env = append(env, relayLogEnv+"="+opts.RelayLog)
			}
			netdev = append(netdev, fmt.Sprintf("guestfwd=tcp:%s:%d-cmd:/usr/bin/env %s %s", HostIP, f.GuestPort, strings.Join(env, " "), self))
		}
		for _, gp := range guestPorts {
			hp, err := freePort()
			if err != nil {
				t.Fatalf("guest: %v", err)
			}
			vm.ports[gp] = hp
			netdev = append(netdev, fmt.Sprintf("hostfwd=tcp:127.0.0.1:%d-:%d", hp, gp))
		}
		args := []string{
			"-accel", "tcg", "-cpu", "max", "-m", strconv.Itoa(opts.MemoryMiB), "-smp", strconv.Itoa(opts.CPUs),
			"-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
			"-serial", "file:" + vm.serial,
			"-kernel", opts.Kernel, "-initrd", opts.Initrd,
			"-append", strings.Join(append([]string{"console=ttyS0", "panic=-1", "loglevel=4"}, opts.Append...), " "),
			"-netdev", strings.Join(netdev, ","), "-device", "virtio-net-pci,netdev=n0",
			"-device", "virtio-rng-pci",
		}
		if opts.TPM != "" {
			args = append(args, "-chardev", "socket,id=chrtpm,path="+opts.TPM,
				"-tpmdev", "emulator,id=tpm0,chardev=chrtpm", "-device", "tpm-tis,tpmdev=tpm0")
		}
		for i, d := range opts.Disks {
			args = append(args, "-drive", fmt.Sprintf("file=%s,format=raw,if=virtio,index=%d,cache=writeback", d, i))
		}
		out := &bytes.Buffer{}
		cmd := exec.Command(qemu, args...)
		cmd.Stdout, cmd.Stderr = out, out
		cmd.Env = withoutRelayEnv(os.Environ())
		vm.started = time.Now()
		proc, err := child.Start(cmd)
		if err != nil {
			t.Fatalf("guest %s: %v", name, err)
		}
		// QEMU fails at once when a hostfwd port was taken meanwhile.
		select {
		case <-proc.Exited():
			if attempt < attempts && strings.Contains(out.String(), "host forwarding") {
				t.Logf("guest %s: a forwarded port was taken, retrying", name)
				continue
			}
			t.Fatalf("guest %s: QEMU exited at once: %v\n%s", name, proc.Err(), out.String())
		case <-time.After(300 * time.Millisecond):
		}
		vm.proc = proc
		break
	}
	vm.timer = time.AfterFunc(opts.Timeout, func() { _ = vm.proc.Stop(time.Second) })
	t.Cleanup(func() {
		vm.timer.Stop()
		_ = vm.proc.Stop(5 * time.Second)
		// A daemon that died while the guest ran is a failure even if
		// no call noticed.
		if s := vm.Serial(); strings.Contains(s, DiedLine) {
			t.Errorf("guest %s: %s", name, firstLine(s[strings.Index(s, DiedLine):]))
		}
		if t.Failed() {
			vm.keepSerial()
		}
	})
	t.Logf("guest %s: QEMU pid %d, probe at %s", name, vm.proc.PID(), vm.Addr(ProbePort))
	return vm
}

// Addr is the host address ("127.0.0.1:PORT") of a guest TCP port listed
// in Options.HostPorts (or ProbePort).
func (vm *VM) Addr(guestPort int) string {
	hp, ok := vm.ports[guestPort]
	if !ok {
		vm.t.Fatalf("guest %s: port %d is not forwarded", vm.name, guestPort)
	}
	return "127.0.0.1:" + strconv.Itoa(hp)
}

// Serial returns the serial console output so far.
func (vm *VM) Serial() string {
	b, _ := os.ReadFile(vm.serial)
	return string(b)
}

// WaitFor waits until the serial console shows substr, QEMU exits, the
// guest reports a start-up failure or ctx ends. It returns the time since
// QEMU started.
func (vm *VM) WaitFor(ctx context.Context, substr string) (time.Duration, error) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		s := vm.Serial()
		if strings.Contains(s, substr) {
			return time.Since(vm.started), nil
		}
		if substr != FailedLine {
			if i := strings.Index(s, FailedLine); i >= 0 {
				return 0, fmt.Errorf("guest %s: %s", vm.name, firstLine(s[i:]))
			}
		}
		select {
		case <-vm.proc.Exited():
			if s := vm.Serial(); strings.Contains(s, substr) {
				return time.Since(vm.started), nil
			}
			return 0, fmt.Errorf("guest %s: QEMU exited (%v) before %q", vm.name, vm.proc.Err(), substr)
		case <-ctx.Done():
			return 0, fmt.Errorf("guest %s: waiting for %q: %w", vm.name, substr, ctx.Err())
		case <-tick.C:
		}
	}
}

// WaitReady waits (at most timeout) for ReadyLine and returns the time
// from QEMU's start.
func (vm *VM) WaitReady(timeout time.Duration) time.Duration {
	vm.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d, err := vm.WaitFor(ctx, ReadyLine)
	if err != nil {
		vm.t.Fatalf("%v\nserial console (tail):\n%s", err, tail(vm.Serial(), 60))
	}
	return d
}

// Kill stops QEMU at once (SIGKILL), as a host losing power would.
func (vm *VM) Kill() {
	vm.timer.Stop()
	_ = vm.proc.Stop(0)
}

// keepSerial copies the serial log to the artifact directory.
func (vm *VM) keepSerial() {
	dir := ArtifactDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		vm.t.Logf("guest %s: keep serial log: %v", vm.name, err)
		return
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(vm.t.Name()) + "-" + vm.name + ".serial.log"
	dst := filepath.Join(dir, name)
	b, err := os.ReadFile(vm.serial)
	if err == nil {
		err = os.WriteFile(dst, b, 0o644)
	}
	if err != nil {
		vm.t.Logf("guest %s: keep serial log: %v", vm.name, err)
		return
	}
	vm.t.Logf("guest %s: serial log kept at %s", vm.name, dst)
}

// ArtifactDir is where failed tests leave serial logs:
// $GUESTD_E2E_ARTIFACTS, else bin/e2e-artifacts beside the guest image.
func ArtifactDir() string {
	if d := os.Getenv("GUESTD_E2E_ARTIFACTS"); d != "" {
		return d
	}
	if d, err := ImageDir(); err == nil {
		return filepath.Join(filepath.Dir(d), "e2e-artifacts")
	}
	return filepath.Join(os.TempDir(), "guestd-e2e-artifacts")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return strings.TrimSpace(s[:i])
	}
	return strings.TrimSpace(s)
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func withoutRelayEnv(env []string) []string {
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, relayEnv+"=") && !strings.HasPrefix(e, relayLogEnv+"=") && !strings.HasPrefix(e, relayPortEnv+"=") {
			out = append(out, e)
		}
	}
	return out
}
