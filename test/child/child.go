package child

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Process is a started child process.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once the process has been waited for
	err    error         // its exit status, valid after exited
	once   sync.Once
}

// Start starts cmd and waits for it in the background.
func Start(cmd *exec.Cmd) (*Process, error) {
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(cmd.Path), err)
	}
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// PID returns the process id.
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err is the exit status; valid once Exited is closed.
func (p *Process) Err() error { return p.err }

// Stop terminates the process (SIGTERM, then SIGKILL after grace) and
// waits for it. It may be called more than once.
func (p *Process) Stop(grace time.Duration) error {
	var err error
	p.once.Do(func() {
		select {
		case <-p.exited:
			return // already gone; nothing to signal
		default:
		}
		name := filepath.Base(p.cmd.Path)
		if serr := p.cmd.Process.Signal(syscall.SIGTERM); serr != nil && !errors.Is(serr, os.ErrProcessDone) {
			err = fmt.Errorf("signal %s: %w", name, serr)
		}
		select {
		case <-p.exited:
		case <-time.After(grace):
			if kerr := p.cmd.Process.Kill(); kerr != nil && !errors.Is(kerr, os.ErrProcessDone) {
				err = fmt.Errorf("kill %s: %w", name, kerr)
			}
			<-p.exited
		}
	})
	return err
}
