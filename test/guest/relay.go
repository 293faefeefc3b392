package guest

import (
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"
)

// Environment of a relay process (set only in the guestfwd command line).
const (
	relayEnv     = "GUESTD_E2E_RELAY"
	relayPortEnv = "GUESTD_E2E_RELAY_PORT"
	relayLogEnv  = "GUESTD_E2E_RELAY_LOG"
)

// RelayMain turns the test binary into the relay QEMU runs for one guest
// connection through a Forward, when it was started as one: it copies
// between the connection (stdin and stdout, one socket) and the target,
// then exits. Otherwise it returns at once. Call it first in TestMain.
//
// slirp gives the command the guest connection as stdin, stdout and
// stderr, so the relay never writes diagnostics: anything it printed would
// reach the guest.
func RelayMain() {
	target := os.Getenv(relayEnv)
	if target == "" {
		return
	}
	if err := relay(target); err != nil {
		os.Exit(1)
	}
	os.Exit(0)
}

func relay(target string) error {
	guest, err := net.FileConn(os.Stdin)
	if err != nil {
		return err
	}
	defer guest.Close()
	if log := os.Getenv(relayLogEnv); log != "" {
		if f, err := os.OpenFile(log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
			fmt.Fprintf(f, "%s %s\n", os.Getenv(relayPortEnv), target)
			f.Close()
		}
	}
	host, err := net.DialTimeout("tcp", target, 10*time.Second)
	if err != nil {
		return err
	}
	defer host.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); pipe(host, guest) }()
	go func() { defer wg.Done(); pipe(guest, host) }()
	wg.Wait()
	return nil
}

// pipe copies src to dst, then half-closes dst's write side so the peer
// sees end of stream while the other direction goes on.
func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	if c, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = c.CloseWrite()
	} else {
		_ = dst.Close()
	}
}
