package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/mdlayher/vsock"
)

// Address is a parsed listen address.
type Address struct {
	Network string // "unix", "tcp" or "vsock"
	Path    string // unix
	Host    string // tcp: host:port
	CID     uint32 // vsock; vsockAnyCID for any
	Port    uint32 // vsock
}

const vsockAnyCID = ^uint32(0)

// ParseAddress accepts upstream's address forms: unix:///path,
// tcp://host:port (or a bare host:port, as the gRPC builds of the guest
// components take) and vsock://CID:PORT (CID "any", -1 or 4294967295 for
// any).
func ParseAddress(s string) (Address, error) {
	switch {
	case strings.HasPrefix(s, "unix://"):
		p := strings.TrimPrefix(s, "unix://")
		if !filepath.IsAbs(p) {
			return Address{}, fmt.Errorf("listen address %q: the socket path must be absolute (unix:///path)", s)
		}
		return Address{Network: "unix", Path: filepath.Clean(p)}, nil
	case strings.HasPrefix(s, "vsock://"):
		cidStr, portStr, ok := strings.Cut(strings.TrimPrefix(s, "vsock://"), ":")
		if !ok {
			return Address{}, fmt.Errorf("listen address %q: want vsock://CID:PORT", s)
		}
		cid := vsockAnyCID
		if cidStr != "any" && cidStr != "-1" {
			v, err := strconv.ParseUint(cidStr, 10, 32)
			if err != nil {
				return Address{}, fmt.Errorf("listen address %q: CID %q is not a number", s, cidStr)
			}
			cid = uint32(v)
		}
		port, err := strconv.ParseUint(portStr, 10, 32)
		if err != nil || port == 0 {
			return Address{}, fmt.Errorf("listen address %q: port %q is not a number above 0", s, portStr)
		}
		return Address{Network: "vsock", CID: cid, Port: uint32(port)}, nil
	}
	host := strings.TrimPrefix(s, "tcp://")
	if _, _, err := net.SplitHostPort(host); err != nil {
		return Address{}, fmt.Errorf("listen address %q: want unix:///PATH, tcp://HOST:PORT or vsock://CID:PORT", s)
	}
	return Address{Network: "tcp", Host: host}, nil
}

// Listen opens a listener on a parsed address. A unix socket's directory
// is created (0755), a stale socket file replaced, and the socket made
// 0600: only root (the kata agent) may talk to it.
func Listen(a Address) (net.Listener, error) {
	switch a.Network {
	case "unix":
		if err := os.MkdirAll(filepath.Dir(a.Path), 0o755); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", a.Path, err)
		}
		if fi, err := os.Lstat(a.Path); err == nil {
			if fi.Mode()&os.ModeSocket == 0 {
				return nil, fmt.Errorf("listen on %s: a non-socket file is in the way", a.Path)
			}
			if err := os.Remove(a.Path); err != nil {
				return nil, fmt.Errorf("listen on %s: remove stale socket: %w", a.Path, err)
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("listen on %s: %w", a.Path, err)
		}
		ln, err := net.Listen("unix", a.Path)
		if err != nil {
			return nil, err
		}
		if err := os.Chmod(a.Path, 0o600); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen on %s: %w", a.Path, err)
		}
		return ln, nil
	case "tcp":
		return net.Listen("tcp", a.Host)
	case "vsock":
		if a.CID == vsockAnyCID {
			return vsock.Listen(a.Port, nil)
		}
		return vsock.ListenContextID(a.CID, a.Port, nil)
	}
	return nil, fmt.Errorf("listen: network %q is not supported", a.Network)
}
