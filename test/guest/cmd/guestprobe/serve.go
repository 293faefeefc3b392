package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

// shResult is the answer to POST /sh.
type shResult struct {
	Stdout   string `json:"stdout"`
	Stderr   string `json:"stderr"`
	Exit     int    `json:"exit"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

const (
	defaultShTimeout = 60 * time.Second
	maxScript        = 1 << 20
	// maxOutput bounds each of stdout and stderr in the answer; the rest is
	// dropped and a note is appended.
	maxOutput = 16 << 20
)

func serveMain(ctx context.Context, args []string, stderr io.Writer) error {
	addr := ":8080"
	switch len(args) {
	case 0:
	case 1:
		addr = args[0]
	default:
		return errors.New("want at most one ADDR")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: shHandler("/bin/sh"), ErrorLog: log.New(stderr, "", 0), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	fmt.Fprintf(stderr, "serve listening on %s\n", ln.Addr())
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func shHandler(shell string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("POST /sh", func(w http.ResponseWriter, r *http.Request) {
		timeout := defaultShTimeout
		if t := r.URL.Query().Get("timeout"); t != "" {
			secs, err := strconv.ParseFloat(t, 64)
			if err != nil || secs <= 0 {
				http.Error(w, "timeout: want a positive number of seconds", http.StatusBadRequest)
				return
			}
			timeout = time.Duration(secs * float64(time.Second))
		}
		script, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxScript))
		if err != nil {
			http.Error(w, "reading the script: "+err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		res, err := runScript(r.Context(), shell, string(script), timeout)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(res)
	})
	return mux
}

// runScript runs script with shell -c in its own process group, with
// stdout and stderr going to temporary files (so a background process the
// script leaves running cannot hold the answer back). On timeout, or when
// ctx ends, the whole process group is killed; processes the script started
// in the background and left running are otherwise kept.
func runScript(ctx context.Context, shell, script string, timeout time.Duration) (*shResult, error) {
	outF, err := os.CreateTemp("", "guestprobe-sh-out-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(outF.Name())
	defer outF.Close()
	errF, err := os.CreateTemp("", "guestprobe-sh-err-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(errF.Name())
	defer errF.Close()

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, shell, "-c", script)
	cmd.Stdin = nil // /dev/null
	cmd.Stdout, cmd.Stderr = outF, errF
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	werr := cmd.Wait()
	res := &shResult{TimedOut: ctx.Err() != nil}
	if res.TimedOut {
		// The shell may have exited on its own just before the deadline
		// while its children did not: kill the group in any case.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	var ee *exec.ExitError
	switch {
	case werr == nil:
	case errors.As(werr, &ee):
		res.Exit = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Exit = 128 + int(ws.Signal())
		}
	default:
		return nil, werr
	}
	if res.Stdout, err = readCapped(outF); err != nil {
		return nil, err
	}
	if res.Stderr, err = readCapped(errF); err != nil {
		return nil, err
	}
	if res.TimedOut {
		res.Stderr += fmt.Sprintf("guestprobe: killed after the %s timeout\n", timeout)
	}
	return res, nil
}

func readCapped(f *os.File) (string, error) {
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, 1<<62), maxOutput+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxOutput {
		return string(b[:maxOutput]) + "\n[guestprobe: output truncated]\n", nil
	}
	return string(b), nil
}
