package swtpm

import "syscall"

// sysProcAttr makes the kernel kill swtpm if the test binary dies before its
// cleanup runs (a test timeout, a crash), so no emulator outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
