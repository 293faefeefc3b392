package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseBridgeSpec(t *testing.T) {
	tests := []struct {
		in      string
		want    bridgeSpec
		wantErr bool
	}{
		{in: "1100=1:1100", want: bridgeSpec{tcpPort: 1100, cid: 1, port: 1100}},
		{in: "8000=4294967295:2", want: bridgeSpec{tcpPort: 8000, cid: 4294967295, port: 2}},
		{in: "1100", wantErr: true},
		{in: "1100=1", wantErr: true},
		{in: "0=1:1", wantErr: true},
		{in: "70000=1:1", wantErr: true},
		{in: "x=1:1", wantErr: true},
		{in: "1=-1:1", wantErr: true},
		{in: "1=1:y", wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseBridgeSpec(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseBridgeSpec(%q) = %v, %v; want %v, err %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// TestBridgeHalfClose runs the bridge between two TCP listeners (standing in
// for the vsock side): a client that shuts down its write side still reads
// the whole answer, and the upstream that starts late is retried.
func TestBridgeHalfClose(t *testing.T) {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	upAddr := up.Addr().String()
	up.Close() // not there yet: the bridge must retry

	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", upAddr)
	}
	go serveBridge(ctx, front, dial, 5*time.Second, log.New(io.Discard, "", 0), "test")

	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	up, err = net.Listen("tcp", upAddr)
	if err != nil {
		t.Skipf("could not re-listen on %s: %v", upAddr, err)
	}
	defer up.Close()
	go func() {
		s, err := up.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		b, _ := io.ReadAll(s) // until the client's half-close arrives
		s.Write(bytes.ToUpper(b))
		s.(*net.TCPConn).CloseWrite()
	}()
	c.Write([]byte("hello through the bridge"))
	c.(*net.TCPConn).CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "HELLO THROUGH THE BRIDGE" {
		t.Errorf("got %q", got)
	}
}

func TestBridgeGivesUp(t *testing.T) {
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	dial := func(ctx context.Context) (net.Conn, error) { return nil, errors.New("connection refused") }
	go serveBridge(context.Background(), front, dial, 200*time.Millisecond, log.New(io.Discard, "", 0), "test")
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("want a clean close once the bridge gives up, got %v", err)
	}
}

func postSh(t *testing.T, url, script string) shResult {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(script))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("HTTP %d: %s", resp.StatusCode, b)
	}
	var r shResult
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestServe(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	srv := httptest.NewServer(shHandler("/bin/sh"))
	defer srv.Close()

	resp, err := http.Get(srv.URL + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()

	r := postSh(t, srv.URL+"/sh", "echo out; echo err >&2; exit 3")
	if r != (shResult{Stdout: "out\n", Stderr: "err\n", Exit: 3}) {
		t.Errorf("got %+v", r)
	}

	// A background process that keeps stdout open does not hold the answer.
	start := time.Now()
	r = postSh(t, srv.URL+"/sh", "sleep 30 & echo started")
	if r.Stdout != "started\n" || r.Exit != 0 || time.Since(start) > 10*time.Second {
		t.Errorf("background: got %+v after %s", r, time.Since(start))
	}

	// The timeout kills the whole process group.
	mark := filepath.Join(t.TempDir(), "mark")
	start = time.Now()
	r = postSh(t, srv.URL+"/sh?timeout=0.5", "(sleep 2; touch "+mark+") & sleep 30")
	if !r.TimedOut || r.Exit != 128+9 || time.Since(start) > 10*time.Second {
		t.Errorf("timeout: got %+v after %s", r, time.Since(start))
	}
	time.Sleep(2500 * time.Millisecond)
	if _, err := os.Stat(mark); err == nil {
		t.Errorf("a child of the timed-out script survived")
	}

	resp, err = http.Post(srv.URL+"/sh?timeout=x", "text/plain", strings.NewReader("true"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("bad timeout: HTTP %d", resp.StatusCode)
	}
}

func TestPrefixWriter(t *testing.T) {
	var console, logb bytes.Buffer
	p := &prefixWriter{prefix: "[aa] ", console: &console, log: &logb}
	p.copyLines(strings.NewReader("one\ntwo\nlast without newline"))
	if want := "[aa] one\n[aa] two\n[aa] last without newline\n"; console.String() != want {
		t.Errorf("console %q, want %q", console.String(), want)
	}
	if want := "one\ntwo\nlast without newline\n"; logb.String() != want {
		t.Errorf("log %q, want %q", logb.String(), want)
	}
}

func TestSupervise(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	dir := t.TempDir()
	logf, ready := filepath.Join(dir, "x.log"), filepath.Join(dir, "ready")
	var out, errb bytes.Buffer
	code := superviseMain(context.Background(), []string{"-log", logf, "-ready", ready, "x", "/bin/sh", "-c", "echo hi; echo oops >&2; exit 4"}, &out, &errb)
	if code != 4 {
		t.Errorf("code %d, want 4", code)
	}
	if want := "[x] hi\n[x] oops\n[x] exited: exit status 4\n"; out.String() != want {
		t.Errorf("before ready: console %q, want %q", out.String(), want)
	}
	os.WriteFile(ready, nil, 0o644)
	out.Reset()
	superviseMain(context.Background(), []string{"-log", logf, "-ready", ready, "x", "/bin/sh", "-c", "kill -9 $$"}, &out, &errb)
	if want := "GUESTD-E2E DIED: x signal: killed\n"; out.String() != want {
		t.Errorf("after ready: console %q, want %q", out.String(), want)
	}
	b, _ := os.ReadFile(logf)
	if !strings.HasPrefix(string(b), "hi\noops\n") {
		t.Errorf("log %q", b)
	}
}

func TestWait(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := waitMain(context.Background(), []string{"-t", "2", "tcp:" + ln.Addr().String(), "file:/"}, io.Discard); err != nil {
		t.Error(err)
	}
	if err := waitMain(context.Background(), []string{"-t", "0.3", "file:/nonexistent"}, io.Discard); err == nil {
		t.Error("want a timeout")
	}
	start := time.Now()
	err = waitMain(context.Background(), []string{"-t", "10", "-pid", "2147483646", "file:/nonexistent"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "exited") || time.Since(start) > 2*time.Second {
		t.Errorf("dead pid: %v after %s", err, time.Since(start))
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := waitMain(context.Background(), []string{"-t", "2", "listen:" + strconv.Itoa(port)}, io.Discard); err != nil {
		t.Error(err)
	}
	table := "  sl  local_address rem_address   st\n   0: 00000000:044C 00000000:0000 0A\n   1: 0100007F:1F90 0100007F:D2C4 01\n"
	if !tcpListening(table, 1100) || tcpListening(table, 8080) || tcpListening(table, 1101) {
		t.Error("tcpListening: wrong answer for a fixed table")
	}
	if !alive(os.Getpid()) {
		t.Error("alive(self) = false")
	}
}
