package guest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Result is what a guest shell script did.
type Result struct {
	Stdout string `json:"stdout"`
	Stderr string `json:"stderr"`
	Exit   int    `json:"exit"`
}

// String renders r for test failure messages.
func (r Result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.Exit, r.Stdout, r.Stderr)
}

// Sh runs script with /bin/sh in the guest through guestprobe and returns
// its output. timeout bounds the script in the guest (its process group is
// killed then) and the request.
func (vm *VM) Sh(ctx context.Context, timeout time.Duration, script string) (Result, error) {
	secs := int(timeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	url := "http://" + vm.Addr(ProbePort) + "/sh?timeout=" + strconv.Itoa(secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(script))
	if err != nil {
		return Result{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Result{}, fmt.Errorf("guest %s: run script: %w", vm.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return Result{}, fmt.Errorf("guest %s: run script: %w", vm.name, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Result{}, fmt.Errorf("guest %s: run script: HTTP %d: %s", vm.name, resp.StatusCode, bytes.TrimSpace(body))
	}
	var r Result
	if err := json.Unmarshal(body, &r); err != nil {
		return Result{}, fmt.Errorf("guest %s: run script: decode %q: %w", vm.name, body, err)
	}
	return r, nil
}

// MustSh runs script and fails t unless it exits 0.
func (vm *VM) MustSh(t testing.TB, timeout time.Duration, script string) string {
	t.Helper()
	r, err := vm.Sh(context.Background(), timeout, script)
	if err != nil {
		t.Fatalf("%v\nserial console (tail):\n%s", err, tail(vm.Serial(), 30))
	}
	if r.Exit != 0 {
		t.Fatalf("guest %s: script failed: %s\nscript:\n%s", vm.name, r, script)
	}
	return r.Stdout
}

// Poweroff asks the guest to power off and waits (bounded) for QEMU to
// exit; it kills QEMU if the guest does not comply.
func (vm *VM) Poweroff() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = vm.Sh(ctx, 2*time.Second, "sync; poweroff -f")
	select {
	case <-vm.proc.Exited():
	case <-time.After(20 * time.Second):
		vm.t.Logf("guest %s did not power off; killing QEMU", vm.name)
		vm.Kill()
	}
}
