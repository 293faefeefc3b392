package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mdlayher/vsock"
)

// waitMain waits until every target answers, for at most -t seconds. With
// -pid, it fails as soon as that process is gone (or a zombie), so /init
// learns at once that a daemon died during start-up.
func waitMain(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secs := fs.Float64("t", 20, "timeout in seconds")
	pid := fs.Int("pid", 0, "fail when this process is gone")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("want at least one TARGET")
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(*secs*float64(time.Second)))
	defer cancel()
	for _, t := range fs.Args() {
		if err := waitFor(ctx, t, *pid); err != nil {
			return err
		}
	}
	return nil
}

func waitFor(ctx context.Context, target string, pid int) error {
	var last error
	for {
		if pid > 0 && !alive(pid) {
			return fmt.Errorf("%s: process %d exited", target, pid)
		}
		if last = probe(ctx, target); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not ready in time: %v", target, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func probe(ctx context.Context, target string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var d net.Dialer
	switch {
	case strings.HasPrefix(target, "unix:"):
		c, err := d.DialContext(ctx, "unix", strings.TrimPrefix(strings.TrimPrefix(target, "unix:"), "//"))
		if err != nil {
			return err
		}
		return c.Close()
	case strings.HasPrefix(target, "tcp:"):
		c, err := d.DialContext(ctx, "tcp", strings.TrimPrefix(target, "tcp:"))
		if err != nil {
			return err
		}
		return c.Close()
	case strings.HasPrefix(target, "vsock:"):
		cid, port, ok := strings.Cut(strings.TrimPrefix(target, "vsock:"), ":")
		c64, err1 := strconv.ParseUint(cid, 10, 32)
		p64, err2 := strconv.ParseUint(port, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return fmt.Errorf("want vsock:CID:PORT")
		}
		c, err := vsock.DialContext(ctx, uint32(c64), uint32(p64), nil)
		if err != nil {
			return err
		}
		return c.Close()
	case strings.HasPrefix(target, "http://"):
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	case strings.HasPrefix(target, "listen:"):
		// A TCP listener on the port, checked without connecting (a
		// connection to the bridge would start a vsock dial).
		port, err := strconv.ParseUint(strings.TrimPrefix(target, "listen:"), 10, 16)
		if err != nil {
			return fmt.Errorf("want listen:PORT")
		}
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, err := os.ReadFile(f)
			if err == nil && tcpListening(string(b), uint16(port)) {
				return nil
			}
		}
		return fmt.Errorf("nothing listens on TCP port %d", port)
	case strings.HasPrefix(target, "file:"):
		_, err := os.Stat(strings.TrimPrefix(target, "file:"))
		return err
	}
	return fmt.Errorf("unknown target %q: want unix:, tcp:, listen:, vsock:, http:// or file:", target)
}

// tcpListening reports whether the /proc/net/tcp{,6} table has a socket in
// LISTEN state (0A) on port.
func tcpListening(table string, port uint16) bool {
	want := fmt.Sprintf(":%04X", port)
	for _, line := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 3 && strings.HasSuffix(f[1], want) && f[3] == "0A" {
			return true
		}
	}
	return false
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) STATE ...; comm may contain spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}
