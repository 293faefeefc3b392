package registry

import "syscall"

// sysProcAttr makes the kernel kill the registry if the test binary dies
// before its cleanup runs (a test timeout, a crash), so no registry outlives
// its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
