package rest

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// call is one recorded call into a fake.
type call struct {
	method   string // "Evidence", "AdditionalEvidence", "Token", "Extend", "GetResource"
	data     []byte // runtime data
	arg      string // token type or URI
	domain   string
	op       string
	content  string
	register *uint64
}

// fake implements Attestation and Resources and records every call.
type fake struct {
	mu    sync.Mutex
	calls []call

	evidence   []byte
	additional []byte
	token      []byte
	resource   []byte
	err        error // returned by every data method when set
	extendErr  error
	tee        string
	addTees    []string
	block      chan struct{} // when set, GetResource waits for it to close
	started    chan struct{} // when set, GetResource signals it first
}

func (f *fake) record(c call) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, c)
}

func (f *fake) recorded() []call {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]call(nil), f.calls...)
}

func (f *fake) Evidence(_ context.Context, rd []byte) ([]byte, error) {
	f.record(call{method: "Evidence", data: bytes.Clone(rd)})
	return f.evidence, f.err
}

func (f *fake) AdditionalEvidence(_ context.Context, rd []byte) ([]byte, error) {
	f.record(call{method: "AdditionalEvidence", data: bytes.Clone(rd)})
	return f.additional, f.err
}

func (f *fake) Token(_ context.Context, tt string) ([]byte, error) {
	f.record(call{method: "Token", arg: tt})
	return f.token, f.err
}

func (f *fake) ExtendRuntimeMeasurement(_ context.Context, d, o, c string, reg *uint64) error {
	f.record(call{method: "Extend", domain: d, op: o, content: c, register: reg})
	return f.extendErr
}

func (f *fake) TeeType() string          { return f.tee }
func (f *fake) AdditionalTees() []string { return f.addTees }

func (f *fake) GetResource(ctx context.Context, uri string) ([]byte, error) {
	f.record(call{method: "GetResource", arg: uri})
	if f.started != nil {
		close(f.started)
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return f.resource, f.err
}

func newFake() *fake {
	return &fake{
		evidence:   []byte(`{"svn":"1","report_data":"eHh4eA=="}`),
		additional: []byte(`{"nvidia":"..."}`),
		token:      []byte(`{"token":"eyJhbGciOiJFUzI1NiJ9.e30.sig"}`),
		resource:   []byte("resource-bytes"),
		tee:        "tdx",
	}
}

// newHandler builds a handler over f for features, logging into a buffer.
func newHandler(t *testing.T, features string, f *fake) (http.Handler, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(Config{Features: features, Version: "v1.2.3"}, f, f, log)
	if err != nil {
		t.Fatalf("New(%q): %v", features, err)
	}
	return h, &buf
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// do serves one request from a loopback peer unless remote is set.
func do(h http.Handler, method, target, body, remote string) *httptest.ResponseRecorder {
	var r *http.Request
	if body == "" {
		r = httptest.NewRequest(method, target, nil)
	} else {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	}
	r.RemoteAddr = "127.0.0.1:40000"
	if remote != "" {
		r.RemoteAddr = remote
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}
