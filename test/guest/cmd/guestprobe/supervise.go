package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// superviseMain runs a daemon the way kata-agent runs the guest components:
// it copies each line the daemon writes (stdout and stderr, in order) to
// stdout, which /init points at the serial console, as "[NAME] line", and
// the raw line to the -log file. When the daemon exits it reports the
// status: after start-up (the -ready file exists) as the single line
// "GUESTD-E2E DIED: NAME STATUS" the host harness watches for. SIGTERM and
// SIGINT are passed on to the daemon. The exit code is the daemon's.
func superviseMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("supervise", flag.ContinueOnError)
	fs.SetOutput(stderr)
	logFile := fs.String("log", "", "also append the daemon's output to this file")
	ready := fs.String("ready", "", "report an exit as GUESTD-E2E DIED once this file exists")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() < 2 {
		fmt.Fprintln(stderr, "guestprobe supervise: want NAME CMD [ARG...]")
		return 2
	}
	name, argv := fs.Arg(0), fs.Args()[1:]
	var logW io.Writer = io.Discard
	if *logFile != "" {
		f, err := os.OpenFile(*logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			fmt.Fprintf(stderr, "guestprobe supervise: %v\n", err)
			return 1
		}
		defer f.Close()
		logW = f
	}
	out := &prefixWriter{prefix: "[" + name + "] ", console: stdout, log: logW}

	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(stderr, "guestprobe supervise: %v\n", err)
		return 1
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		w.Close()
		r.Close()
		out.line(fmt.Sprintf("cannot start: %v", err))
		return 127
	}
	w.Close()
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		out.copyLines(r)
	}()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			cmd.Process.Signal(syscall.SIGTERM)
		case <-stopped:
		}
	}()
	werr := cmd.Wait()
	close(stopped)
	// Children the daemon left behind may hold the pipe open: do not wait
	// for them long.
	select {
	case <-copied:
	case <-time.After(2 * time.Second):
	}
	r.Close()

	code := 0
	status := "exit status 0"
	var ee *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee):
		status = ee.ProcessState.String()
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
	default:
		status, code = werr.Error(), 1
	}
	switch {
	case ctx.Err() != nil:
		out.line("stopped: " + status)
	case *ready != "" && exists(*ready):
		out.mu.Lock()
		fmt.Fprintf(stdout, "%s %s %s\n", "GUESTD-E2E DIED:", name, status)
		fmt.Fprintf(logW, "GUESTD-E2E DIED: %s %s\n", name, status)
		out.mu.Unlock()
	default:
		out.line("exited: " + status)
	}
	return code
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// prefixWriter writes whole lines: prefixed to the console, raw to the log.
type prefixWriter struct {
	mu      sync.Mutex
	prefix  string
	console io.Writer
	log     io.Writer
}

func (p *prefixWriter) line(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// One write per line, so lines of different processes do not mix on
	// the console.
	io.WriteString(p.console, p.prefix+s+"\n")
	io.WriteString(p.log, s+"\n")
}

// copyLines copies r line by line until EOF; a last line without a newline
// is completed. Very long lines are split.
func (p *prefixWriter) copyLines(r io.Reader) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		b, err := br.ReadSlice('\n')
		if len(b) > 0 {
			s := string(b)
			if s[len(s)-1] == '\n' {
				s = s[:len(s)-1]
			}
			p.line(s)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}
