package child

import "syscall"

// sysProcAttr makes the kernel kill the child if the test binary dies
// before its cleanup runs (a test timeout, a crash).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
