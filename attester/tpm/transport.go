package tpm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
)

// maxResponse bounds the size a TPM response may claim in its header. TPM
// responses fit in a few KiB; anything larger is a broken peer.
const maxResponse = 1 << 16

// headerSize is the size of a TPM command or response header: tag (2),
// size (4) and command or response code (4).
const headerSize = 10

// conn is an open channel to the TPM.
type conn interface {
	transport.TPMCloser
	// interruptOn makes blocked I/O fail once ctx is done. The returned
	// stop reports whether ctx fired (and the channel may be out of step).
	interruptOn(ctx context.Context) (stop func() bool)
}

// dial opens the TPM named by device: "unix:PATH" for a swtpm-style socket,
// otherwise a character device such as /dev/tpmrm0.
func dial(ctx context.Context, device string) (conn, error) {
	if path, ok := strings.CutPrefix(device, "unix:"); ok {
		c, err := dialUnix(ctx, path)
		if err != nil {
			return nil, fmt.Errorf("connect to TPM socket %s: %w", path, err)
		}
		return &sockConn{c: c}, nil
	}
	t, err := linuxtpm.Open(device)
	if err != nil {
		return nil, fmt.Errorf("open TPM device %s: %w", device, err)
	}
	return devConn{t}, nil
}

// busyWait bounds how long dialUnix retries a socket whose listen backlog is
// full.
const busyWait = 5 * time.Second

// dialUnix connects to a unix socket. swtpm serves one client at a time with
// a short listen backlog, so right after clients hang up a connect can fail
// with EAGAIN until swtpm accepts again; that is retried.
func dialUnix(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	deadline := time.Now().Add(busyWait)
	for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil || !errors.Is(err, syscall.EAGAIN) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(ctx.Err(), err)
		case <-time.After(wait):
		}
	}
}

// devConn is a TPM character device. The kernel completes a command once it
// has started, so cancellation is only honoured between commands.
type devConn struct{ transport.TPMCloser }

func (devConn) interruptOn(context.Context) func() bool { return func() bool { return false } }

// sockConn is one persistent connection to a TPM emulator socket. swtpm
// answers every command on the same stream, and drops clients that dial per
// command, so the connection is kept open for the attester's lifetime.
type sockConn struct {
	c net.Conn
}

// rcRetry is TPM_RC_RETRY: the TPM was busy and the command may be resent.
const rcRetry = 0x922

// maxRetries bounds resending a command the TPM answered with TPM_RC_RETRY,
// as go-tpm does for device files.
const maxRetries = 8

// Send writes one command and returns its response, resending it while the
// TPM answers TPM_RC_RETRY.
func (s *sockConn) Send(cmd []byte) ([]byte, error) {
	for i := 0; ; i++ {
		rsp, err := s.roundTrip(cmd)
		if err != nil || binary.BigEndian.Uint32(rsp[6:10]) != rcRetry || i == maxRetries {
			return rsp, err
		}
		time.Sleep(time.Duration(1<<i) * time.Millisecond)
	}
}

// roundTrip writes one command and reads exactly one response, however the
// stream splits it.
func (s *sockConn) roundTrip(cmd []byte) ([]byte, error) {
	if _, err := s.c.Write(cmd); err != nil {
		return nil, fmt.Errorf("write TPM command: %w", err)
	}
	rsp := make([]byte, headerSize)
	if _, err := io.ReadFull(s.c, rsp); err != nil {
		return nil, fmt.Errorf("read TPM response header: %w", err)
	}
	size := binary.BigEndian.Uint32(rsp[2:6])
	if size < headerSize || size > maxResponse {
		return nil, fmt.Errorf("read TPM response: header claims %d bytes", size)
	}
	rsp = append(rsp, make([]byte, size-headerSize)...)
	if _, err := io.ReadFull(s.c, rsp[headerSize:]); err != nil {
		return nil, fmt.Errorf("read TPM response body: %w", err)
	}
	return rsp, nil
}

func (s *sockConn) Close() error { return s.c.Close() }

func (s *sockConn) interruptOn(ctx context.Context) func() bool {
	stop := context.AfterFunc(ctx, func() {
		// A deadline in the past fails any blocked read or write at once.
		s.c.SetDeadline(time.Unix(1, 0))
	})
	return func() bool { return !stop() }
}

// defaultDevice is the kernel's resource-managed TPM if present, else the
// raw one.
func defaultDevice() string {
	if _, err := os.Stat("/dev/tpmrm0"); err == nil {
		return "/dev/tpmrm0"
	}
	return "/dev/tpm0"
}

// OpenTransport opens a raw channel to the TPM named by device, spelled as
// Options.Device (empty means DefaultDevice()), for provisioning tools and
// tests that send their own go-tpm commands. A TPM emulator socket serves
// one client at a time: close the channel before opening an Attester on the
// same socket.
func OpenTransport(ctx context.Context, device string) (transport.TPMCloser, error) {
	if device == "" {
		device = defaultDevice()
	}
	return dial(ctx, device)
}
