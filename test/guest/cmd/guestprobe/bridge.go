package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/vsock"
)

// bridgeSpec is one TCPPORT=CID:PORT argument.
type bridgeSpec struct {
	tcpPort   int
	cid, port uint32
}

func (s bridgeSpec) String() string {
	return fmt.Sprintf("tcp:%d=vsock:%d:%d", s.tcpPort, s.cid, s.port)
}

func parseBridgeSpec(s string) (bridgeSpec, error) {
	tcp, vs, ok := strings.Cut(s, "=")
	if !ok {
		return bridgeSpec{}, fmt.Errorf("%q: want TCPPORT=CID:PORT", s)
	}
	cid, port, ok := strings.Cut(vs, ":")
	if !ok {
		return bridgeSpec{}, fmt.Errorf("%q: want TCPPORT=CID:PORT", s)
	}
	var b bridgeSpec
	t, err := strconv.ParseUint(tcp, 10, 16)
	if err != nil || t == 0 {
		return bridgeSpec{}, fmt.Errorf("%q: bad TCP port %q", s, tcp)
	}
	b.tcpPort = int(t)
	c, err := strconv.ParseUint(cid, 10, 32)
	if err != nil {
		return bridgeSpec{}, fmt.Errorf("%q: bad vsock CID %q", s, cid)
	}
	p, err := strconv.ParseUint(port, 10, 32)
	if err != nil {
		return bridgeSpec{}, fmt.Errorf("%q: bad vsock port %q", s, port)
	}
	b.cid, b.port = uint32(c), uint32(p)
	return b, nil
}

// dialRetry is how long a bridged connection waits for the vsock side to
// accept (the daemon may still be starting).
const dialRetry = 10 * time.Second

func bridgeMain(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("want at least one TCPPORT=CID:PORT")
	}
	logger := log.New(stderr, "", 0)
	var specs []bridgeSpec
	for _, a := range args {
		s, err := parseBridgeSpec(a)
		if err != nil {
			return err
		}
		specs = append(specs, s)
	}
	var lns []net.Listener
	for _, s := range specs {
		ln, err := net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", s.tcpPort))
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return err
		}
		lns = append(lns, ln)
	}
	var wg sync.WaitGroup
	for i, s := range specs {
		ln := lns[i]
		s := s
		wg.Add(1)
		go func() {
			defer wg.Done()
			dial := func(ctx context.Context) (net.Conn, error) {
				return vsock.DialContext(ctx, s.cid, s.port, nil)
			}
			serveBridge(ctx, ln, dial, dialRetry, logger, s.String())
		}()
		logger.Printf("bridge %s listening", s)
	}
	<-ctx.Done()
	for _, l := range lns {
		l.Close()
	}
	wg.Wait()
	return nil
}

// serveBridge accepts on ln until it is closed and pipes each connection to
// a new connection from dial, retrying dial for up to retry.
func serveBridge(ctx context.Context, ln net.Listener, dial func(context.Context) (net.Conn, error), retry time.Duration, logger *log.Logger, name string) {
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				logger.Printf("bridge %s: accept: %v", name, err)
			}
			return
		}
		go func() {
			up, err := dialWithRetry(ctx, dial, retry)
			if err != nil {
				logger.Printf("bridge %s: %s: %v", name, c.RemoteAddr(), err)
				c.Close()
				return
			}
			pipe(c, up)
		}()
	}
}

func dialWithRetry(ctx context.Context, dial func(context.Context) (net.Conn, error), retry time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, retry)
	defer cancel()
	delay := 20 * time.Millisecond
	for {
		c, err := dial(ctx)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial: %w (gave up after %s)", err, retry)
		case <-time.After(delay):
		}
		if delay < 500*time.Millisecond {
			delay *= 2
		}
	}
}

type closeWriter interface {
	CloseWrite() error
}

// pipe copies a→b and b→a. When one side reaches EOF the write half of the
// other is shut down (half-close), so a client that shuts down its write
// side still gets the whole answer; when a copy fails both connections are
// closed. pipe returns once both directions are done.
func pipe(a, b net.Conn) {
	var wg sync.WaitGroup
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			a.Close()
			b.Close()
		})
	}
	cp := func(dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if err != nil {
			closeBoth()
			return
		}
		if cw, ok := dst.(closeWriter); ok {
			if cw.CloseWrite() == nil {
				return
			}
		}
		closeBoth()
	}
	wg.Add(2)
	go cp(b, a)
	go cp(a, b)
	wg.Wait()
	closeBoth()
}

// vsockEchoMain is an echo server on AF_VSOCK, to check the bridge without
// the daemons.
func vsockEchoMain(ctx context.Context, args []string, stderr io.Writer) error {
	if len(args) != 1 {
		return errors.New("want PORT")
	}
	p, err := strconv.ParseUint(args[0], 10, 32)
	if err != nil {
		return fmt.Errorf("bad port %q", args[0])
	}
	ln, err := vsock.Listen(uint32(p), nil)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); ln.Close() }()
	fmt.Fprintf(stderr, "vsock-echo listening on %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
			if cw, ok := c.(closeWriter); ok {
				cw.CloseWrite()
			}
		}()
	}
}
