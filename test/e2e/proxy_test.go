//go:build e2e

package e2e_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// regProxy stands between the guest's forwarded connection and the
// registry: it records every request it passes on and can slow down one
// blob, so a test can stop the guest in the middle of it.
type regProxy struct {
	addr string

	mu       sync.Mutex
	requests []string // "METHOD PATH"
	slowBlob string   // digest whose body is throttled
	rate     int      // bytes per second for slowBlob
	served   atomic.Int64
}

func startRegProxy(t *testing.T, registryURL string) *regProxy {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	p := &regProxy{}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		p.mu.Lock()
		slow, rate := p.slowBlob, p.rate
		p.mu.Unlock()
		if slow != "" && resp.Request.Method == http.MethodGet && strings.HasSuffix(resp.Request.URL.Path, "/blobs/"+slow) {
			resp.Body = &throttled{r: resp.Body, rate: rate, served: &p.served}
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.requests = append(p.requests, r.Method+" "+r.URL.Path)
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.addr = ln.Addr().String()
	return p
}

// throttle slows the body of blob dgst to rate bytes per second; "" stops.
func (p *regProxy) throttle(dgst string, rate int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.slowBlob, p.rate = dgst, rate
	p.served.Store(0)
}

// blobGets returns the blob digests fetched with GET, in order.
func (p *regProxy) blobGets() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, r := range p.requests {
		if m, path, _ := strings.Cut(r, " "); m == http.MethodGet {
			if _, d, ok := strings.Cut(path, "/blobs/"); ok {
				out = append(out, d)
			}
		}
	}
	return out
}

// throttled passes a body on at a bounded rate and counts the bytes.
type throttled struct {
	r      io.ReadCloser
	rate   int
	served *atomic.Int64
}

func (t *throttled) Read(b []byte) (int, error) {
	chunk := t.rate / 10
	if chunk < 1024 {
		chunk = 1024
	}
	if len(b) > chunk {
		b = b[:chunk]
	}
	n, err := t.r.Read(b)
	t.served.Add(int64(n))
	time.Sleep(time.Duration(n) * time.Second / time.Duration(t.rate))
	return n, err
}

func (t *throttled) Close() error { return t.r.Close() }
