package sev

import (
	"os"
	"syscall"
)

// securityFSMagic is SECURITYFS_MAGIC from linux/magic.h.
const securityFSMagic = 0x73636673

func (hostSystem) securityFSMounted(dir string) (bool, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return false, &os.PathError{Op: "statfs", Path: dir, Err: err}
	}
	return int64(st.Type) == securityFSMagic, nil
}

func (hostSystem) mountSecurityFS(dir string) error {
	// Upstream ran "mount -t securityfs securityfs <dir>"; the flags are
	// the ones systemd uses for securityfs.
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOEXEC)
	if err := syscall.Mount("securityfs", dir, "securityfs", flags, ""); err != nil {
		return &os.PathError{Op: "mount", Path: dir, Err: err}
	}
	return nil
}
