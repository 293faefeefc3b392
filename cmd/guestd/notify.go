package main

import (
	"fmt"
	"net"
	"strings"
)

// notify sends state ("READY=1", "STOPPING=1") to the service manager, as
// sd_notify(3) does, when NOTIFY_SOCKET names a unix datagram socket (a
// path, or an abstract name starting with @); without NOTIFY_SOCKET it does
// nothing. It lets guestd.service be Type=notify: systemd starts what is
// ordered after guestd once every socket listens.
func notify(lookupEnv func(string) (string, bool), state string) error {
	addr, ok := lookupEnv("NOTIFY_SOCKET")
	if !ok || addr == "" {
		return nil
	}
	switch {
	case strings.HasPrefix(addr, "@"):
		addr = "\x00" + addr[1:]
	case !strings.HasPrefix(addr, "/"):
		return fmt.Errorf("notify %s: NOTIFY_SOCKET %q is not a unix socket", state, addr)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	defer c.Close()
	if _, err := c.Write([]byte(state)); err != nil {
		return fmt.Errorf("notify %s: %w", state, err)
	}
	return nil
}
