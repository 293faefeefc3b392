package registry

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// Proxy is a tampering reverse proxy in front of a Registry. Everything it
// does not tamper with is forwarded unchanged, credentials included, so a
// client can push and pull through it as through the registry. It speaks
// TLS when the registry does, with the same CA, and takes the same
// credentials.
type Proxy struct {
	Endpoint
	// Upstream is the registry behind the proxy.
	Upstream *Registry

	srv      *httptest.Server
	rp       *httputil.ReverseProxy
	tampered atomic.Int64
	mu       sync.Mutex
	requests []string
}

// Corrupting starts a proxy in front of r that flips one byte (the middle
// one) of every successful GET response whose URL path satisfies match:
// the registry then serves bytes that do not match their digest, with the
// original length and headers. Use AnyBlob or BlobOf as match to tamper
// with blobs only; any path, manifests included, may be matched.
func Corrupting(t testing.TB, r *Registry, match func(path string) bool) *Proxy {
	t.Helper()
	p := newProxy(t, r)
	p.rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		if req.Method != http.MethodGet || resp.StatusCode != http.StatusOK || !match(req.URL.Path) {
			return nil
		}
		off := int64(0)
		if resp.ContentLength > 0 {
			off = resp.ContentLength / 2
		}
		resp.Body = &flipReader{r: resp.Body, off: off, done: func() { p.tampered.Add(1) }}
		return nil
	}
	p.start(t)
	return p
}

// Substituting starts a proxy in front of r that answers GET and HEAD for
// the blob dgst ("sha256:...") in any repository with content instead,
// while still claiming Docker-Content-Digest: dgst. It does not check
// credentials for that blob. Everything else is forwarded.
func Substituting(t testing.TB, r *Registry, dgst string, content []byte) *Proxy {
	t.Helper()
	p := newProxy(t, r)
	next := p.srv.Config.Handler
	p.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if (req.Method == http.MethodGet || req.Method == http.MethodHead) && strings.HasSuffix(req.URL.Path, "/blobs/"+dgst) {
			p.record(req)
			p.tampered.Add(1)
			h := w.Header()
			h.Set("Content-Type", "application/octet-stream")
			h.Set("Content-Length", strconv.Itoa(len(content)))
			h.Set("Docker-Content-Digest", dgst)
			h.Set("Etag", `"`+dgst+`"`)
			w.WriteHeader(http.StatusOK)
			if req.Method == http.MethodGet {
				_, _ = w.Write(content)
			}
			return
		}
		next.ServeHTTP(w, req)
	})
	p.start(t)
	return p
}

// AnyBlob matches every blob path (/v2/<repo>/blobs/<digest>).
func AnyBlob(path string) bool {
	i := strings.LastIndex(path, "/blobs/")
	return strings.HasPrefix(path, "/v2/") && i >= 0 && !strings.Contains(path[i+len("/blobs/"):], "/")
}

// BlobOf matches the path of blob dgst ("sha256:...") in any repository.
func BlobOf(dgst string) func(path string) bool {
	return func(path string) bool { return AnyBlob(path) && strings.HasSuffix(path, "/blobs/"+dgst) }
}

// Tampered returns how many responses the proxy has tampered with so far
// (for Corrupting: bodies whose flipped byte was actually sent).
func (p *Proxy) Tampered() int { return int(p.tampered.Load()) }

// Requests returns "METHOD PATH" for every request the proxy has received.
func (p *Proxy) Requests() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.requests...)
}

// newProxy prepares (but does not start) a forwarding proxy to r.
func newProxy(t testing.TB, r *Registry) *Proxy {
	t.Helper()
	up, err := url.Parse(r.URL)
	if err != nil {
		t.Fatalf("parse registry URL %s: %v", r.URL, err)
	}
	tr := r.client.Transport.(*http.Transport).Clone()
	tr.DisableCompression = true // pass bodies through byte for byte
	p := &Proxy{Upstream: r}
	p.Endpoint = Endpoint{CAPEM: r.CAPEM, CAFile: r.CAFile, CertDir: r.CertDir, User: r.User, Password: r.Password, tokens: r.tokens}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			// Keep the client's Host so the registry's Location headers
			// point back at the proxy.
			pr.Out.Host = pr.In.Host
		},
		Transport: tr,
	}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		p.record(req)
		p.rp.ServeHTTP(w, req)
	}))
	t.Cleanup(tr.CloseIdleConnections)
	return p
}

// start starts the proxy's server and registers its shutdown.
func (p *Proxy) start(t testing.TB) {
	if p.Upstream.pair != nil {
		p.srv.TLS = &tls.Config{Certificates: []tls.Certificate{*p.Upstream.pair}, MinVersion: tls.VersionTLS12}
		p.srv.StartTLS()
	} else {
		p.srv.Start()
	}
	t.Cleanup(p.srv.Close)
	p.Host = p.srv.Listener.Addr().String()
	p.URL = "http://" + p.Host
	if p.TLS() {
		p.URL = "https://" + p.Host
	}
	p.client = newClient(p.CAPEM)
	t.Cleanup(p.client.CloseIdleConnections)
}

func (p *Proxy) record(req *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, req.Method+" "+req.URL.Path)
}

// flipReader passes r through with the byte at offset off inverted, and
// calls done once that byte has been read.
type flipReader struct {
	r    io.ReadCloser
	off  int64 // offset of the byte to flip, relative to pos
	pos  int64
	done func()
}

func (f *flipReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if i := f.off - f.pos; i >= 0 && i < int64(n) {
		b[i] ^= 0xff
		f.done()
	}
	f.pos += int64(n)
	return n, err
}

func (f *flipReader) Close() error { return f.r.Close() }
