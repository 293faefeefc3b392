package rest

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// listen opens a free loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

func TestServe(t *testing.T) {
	f := newFake()
	h, _ := newHandler(t, "all", f)
	ln := listen(t)
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h) }()

	tests := []struct {
		path     string
		wantCode int
		wantBody string
	}{
		{"/info", 200, `{"version":"v1.2.3","tee":"tdx","additional_tees":[],"feature":"all"}`},
		{"/cdh/resource/default/key/1", 200, "resource-bytes"},
		{"/aa/token?token_type=kbs", 200, `{"token":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}`},
		{"/aa/evidence", 400, ""},
		{"/nope", 404, ""},
	}
	for _, tt := range tests {
		code, body := get(t, base+tt.path)
		if code != tt.wantCode || (tt.wantBody != "" && body != tt.wantBody) {
			t.Errorf("GET %s = %d %q, want %d %q", tt.path, code, body, tt.wantCode, tt.wantBody)
		}
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("listener still accepts after shutdown")
	}
}

// TestServeDrains cancels while a request is in flight: the request must
// complete, and Serve must wait for it.
func TestServeDrains(t *testing.T) {
	f := newFake()
	f.block = make(chan struct{})
	f.started = make(chan struct{})
	h, _ := newHandler(t, "resource", f)
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, h) }()

	type result struct {
		code int
		body string
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/cdh/resource/default/key/1")
		if err != nil {
			res <- result{body: err.Error()}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b)}
	}()
	<-f.started
	cancel()
	select {
	case err := <-done:
		t.Fatalf("Serve returned %v with a request in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(f.block)
	if r := <-res; r.code != 200 || r.body != "resource-bytes" {
		t.Errorf("in-flight request = %d %q, want 200 resource-bytes", r.code, r.body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
}

func TestServeErrors(t *testing.T) {
	h, _ := newHandler(t, "resource", newFake())
	if err := Serve(context.Background(), nil, h); err == nil {
		t.Error("Serve with a nil listener: no error")
	}
	ln := listen(t)
	if err := Serve(context.Background(), ln, nil); err == nil {
		t.Error("Serve with a nil handler: no error")
	}
	// A listener that fails ends Serve with the error.
	ln.Close()
	err := Serve(context.Background(), ln, h)
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Serve on a closed listener = %v, want net.ErrClosed", err)
	}
}

func TestServeCancelledBeforeStart(t *testing.T) {
	h, _ := newHandler(t, "resource", newFake())
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := Serve(ctx, listen(t), h); err != nil {
		t.Errorf("Serve with a cancelled context = %v, want nil", err)
	}
}
