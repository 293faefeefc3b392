package securemount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// sys is the seam between the plan and the system: every external
// command, mount(2), umount(2) and the block zeroing dm-integrity needs go
// through it, so tests can record the plan and fail any step.
type sys interface {
	// run runs c and returns its standard output. A failure wraps an
	// error with an ExitCode() int method when the command ran and
	// exited non-zero.
	run(ctx context.Context, c cmd) ([]byte, error)
	mount(src, target, fstype string, flags uintptr) error
	unmount(target string) error
	// zero writes size zero bytes at each offset of the block device at
	// path and syncs it.
	zero(path string, offsets []int64, size int) error
}

// cmd is one external command.
type cmd struct {
	name string
	args []string
	// stdin, if not nil, is fed to the command: the key. It is never
	// logged or shown.
	stdin []byte
}

// String is the command line, without stdin.
func (c cmd) String() string {
	return strings.Join(append([]string{c.name}, c.args...), " ")
}

// exitCode returns the exit code of a command that ran and failed, or -1.
func exitCode(err error) int {
	if e, ok := errors.AsType[interface {
		error
		ExitCode() int
	}](err); ok {
		return e.ExitCode()
	}
	return -1
}

// maxStderr bounds the standard error kept in an error message.
const maxStderr = 2048

// realSys is the system.
type realSys struct{ log *slog.Logger }

// lookPath finds name in PATH and then in the sbin directories: a daemon
// started with a short PATH must still find cryptsetup and mkfs.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	sbinDirs := []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"}
	for _, d := range sbinDirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in PATH or %s", name, strings.Join(sbinDirs, ", "))
}

func (s realSys) run(ctx context.Context, c cmd) ([]byte, error) {
	p, err := lookPath(c.name)
	if err != nil {
		return nil, err
	}
	x := exec.CommandContext(ctx, p, c.args...)
	// C locale: mke2fs output is parsed.
	x.Env = append(os.Environ(), "LC_ALL=C")
	if c.stdin != nil {
		x.Stdin = bytes.NewReader(c.stdin)
	}
	var stdout, stderr bytes.Buffer
	x.Stdout, x.Stderr = &stdout, &stderr
	x.WaitDelay = 10 * time.Second
	start := time.Now()
	err = x.Run()
	s.log.Debug("ran", "cmd", c.String(), "took", time.Since(start), "err", err)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		if len(msg) > maxStderr {
			msg = "…" + msg[len(msg)-maxStderr:]
		}
		if msg != "" {
			return stdout.Bytes(), fmt.Errorf("%s: %w: %s", c, err, msg)
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w", c, err)
	}
	return stdout.Bytes(), nil
}

func (realSys) mount(src, target, fstype string, flags uintptr) error {
	return unix.Mount(src, target, fstype, flags, "")
}

func (realSys) unmount(target string) error {
	return unix.Unmount(target, 0)
}

func (realSys) zero(path string, offsets []int64, size int) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	buf := make([]byte, size)
	for _, off := range offsets {
		if _, err := f.WriteAt(buf, off); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
