//go:build !linux

package sev

import (
	"errors"
	"os"
)

func (hostSystem) securityFSMounted(dir string) (bool, error) {
	return false, &os.PathError{Op: "statfs", Path: dir, Err: errors.ErrUnsupported}
}

func (hostSystem) mountSecurityFS(dir string) error {
	return &os.PathError{Op: "mount", Path: dir, Err: errors.ErrUnsupported}
}
