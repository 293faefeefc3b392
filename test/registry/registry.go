package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/guestd/guestd/test/child"
)

const (
	// Binary is where Debian's docker-registry package installs the registry.
	Binary = "/usr/bin/docker-registry"
	// installHint is the command that installs Binary.
	installHint = "apt-get install -y docker-registry"
	// startTimeout bounds how long Start waits for /v2/ to answer.
	startTimeout = 20 * time.Second
	// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
	stopTimeout = 5 * time.Second
	// portAttempts is how often Start retries when another process took the
	// free port it picked before the registry could bind it.
	portAttempts = 5
)

// Options selects how the registry is reached.
type Options struct {
	// TLS serves HTTPS with a certificate from a throwaway CA (Endpoint
	// CAPEM, CAFile, CertDir).
	TLS bool
	// Htpasswd maps user names to passwords. When non-empty, the registry
	// requires basic auth (realm "guestd-test") for every request, unless
	// Token is set.
	Htpasswd map[string]string
	// Token makes the registry require bearer tokens (auth: token) instead
	// of basic auth: Start also runs a TokenServer (Registry.Token) on
	// another free loopback port, TLS when the registry is, that issues
	// them to the Htpasswd users, which must not be empty. Clients given
	// the endpoint's credentials (skopeo --creds, auth.json, SetAuth) get
	// tokens from it through the usual 401 challenge.
	Token bool
}

// Registry is one running docker-registry process.
type Registry struct {
	Endpoint
	// Users are the htpasswd (or token server) users and their passwords
	// (nil when anonymous).
	Users map[string]string
	// Token is the token server the registry trusts (nil unless
	// Options.Token).
	Token *TokenServer
	// Root is the registry's storage root directory.
	Root string
	// Config is the path of the registry's config YAML.
	Config string

	pair *tls.Certificate // the server key pair when serving TLS
	proc *child.Process
	out  *lockedBuffer
}

// Start runs docker-registry on a free loopback port with storage in a new
// t.TempDir, waits until /v2/ answers, and stops it when the test ends.
func Start(t testing.TB, opts Options) *Registry {
	t.Helper()
	if _, err := os.Stat(Binary); err != nil {
		t.Fatalf("docker-registry is not installed (%v); install it with: %s", err, installHint)
	}
	dir := t.TempDir()
	r := &Registry{Root: filepath.Join(dir, "storage"), Config: filepath.Join(dir, "config.yml")}
	if len(opts.Htpasswd) > 0 {
		r.Users = make(map[string]string, len(opts.Htpasswd))
		names := make([]string, 0, len(opts.Htpasswd))
		for u, p := range opts.Htpasswd {
			r.Users[u] = p
			names = append(names, u)
		}
		sort.Strings(names)
		r.User, r.Password = names[0], r.Users[names[0]]
	}
	var tlsFiles *pki
	if opts.TLS {
		p, err := newPKI(filepath.Join(dir, "tls"))
		if err != nil {
			t.Fatalf("registry TLS: %v", err)
		}
		tlsFiles = p
		r.CAPEM, r.CAFile, r.CertDir = p.caPEM, p.caFile, p.certDir
		r.pair = &p.pair
	}
	auth := ""
	switch {
	case opts.Token:
		if r.Users == nil {
			t.Fatalf("registry: %v", errNoUsers)
		}
		r.Token = startTokenServer(t, filepath.Join(dir, "token"), r.Users, r.pair, r.CAPEM)
		r.tokens = r.Token
		auth = r.Token.authYAML()
	case r.Users != nil:
		htpasswd := filepath.Join(dir, "htpasswd")
		if err := writeHtpasswd(htpasswd, r.Users); err != nil {
			t.Fatalf("registry htpasswd: %v", err)
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: guestd-test\n    path: %q\n", htpasswd)
	}
	r.client = newClient(r.CAPEM)
	t.Cleanup(r.client.CloseIdleConnections)

	for attempt := 1; ; attempt++ {
		port, err := freePort()
		if err != nil {
			t.Fatalf("registry: %v", err)
		}
		r.Host = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		r.URL = "http://" + r.Host
		if opts.TLS {
			r.URL = "https://" + r.Host
		}
		if err := os.WriteFile(r.Config, configYAML(r.Root, r.Host, tlsFiles, auth), 0o600); err != nil {
			t.Fatalf("write registry config %s: %v", r.Config, err)
		}
		err = r.start(t)
		if err == nil {
			return r
		}
		if attempt < portAttempts && strings.Contains(r.out.String(), "address already in use") {
			t.Logf("registry port %d was taken, retrying", port)
			continue
		}
		t.Fatalf("docker-registry (pid %d) did not come up on %s: %v\nregistry output:\n%s",
			r.proc.PID(), r.Host, err, r.out.String())
	}
}

// start launches the process for the current config and waits for it to
// answer; on failure the process is stopped and its output kept in r.out.
func (r *Registry) start(t testing.TB) error {
	r.out = &lockedBuffer{}
	cmd := exec.Command(Binary, "serve", r.Config)
	cmd.Stdout, cmd.Stderr = r.out, r.out
	proc, err := child.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	r.proc = proc
	if err := r.waitReady(); err != nil {
		if serr := proc.Stop(stopTimeout); serr != nil {
			t.Logf("stop docker-registry (pid %d): %v", proc.PID(), serr)
		}
		return err
	}
	t.Cleanup(func() {
		if err := proc.Stop(stopTimeout); err != nil {
			t.Errorf("stop docker-registry (pid %d): %v", proc.PID(), err)
		}
	})
	return nil
}

// waitReady polls GET /v2/ until the registry answers with 200 or 401.
func (r *Registry) waitReady() error {
	deadline := time.Now().Add(startTimeout)
	for {
		select {
		case <-r.proc.Exited():
			return fmt.Errorf("docker-registry exited: %v", r.proc.Err())
		default:
		}
		resp, err := r.client.Get(r.URL + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
				return nil
			}
			err = fmt.Errorf("GET %s/v2/: status %s", r.URL, resp.Status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("wait for %s/v2/: %w", r.URL, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop terminates the registry (SIGTERM, then SIGKILL after a grace
// period) and waits for it to exit. It may be called more than once.
func (r *Registry) Stop() error { return r.proc.Stop(stopTimeout) }

// PID returns the registry's process id.
func (r *Registry) PID() int { return r.proc.PID() }

// Output returns what the registry has logged so far.
func (r *Registry) Output() string { return r.out.String() }

// configYAML renders a distribution 2.8 configuration: filesystem storage
// under root, deletes enabled, no redis or cache, listening on addr only,
// with auth (a rendered top-level auth section, or "") appended.
func configYAML(root, addr string, tlsFiles *pki, auth string) []byte {
	secret := make([]byte, 16)
	_, _ = rand.Read(secret) // crypto/rand.Read never fails
	var b bytes.Buffer
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %q
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %q
  secret: %q
  headers:
    X-Content-Type-Options: [nosniff]
`, root, addr, hex.EncodeToString(secret))
	if tlsFiles != nil {
		fmt.Fprintf(&b, "  tls:\n    certificate: %q\n    key: %q\n", tlsFiles.crtFile, tlsFiles.keyFile)
	}
	b.WriteString(auth)
	return b.Bytes()
}

// writeHtpasswd writes users as bcrypt htpasswd lines, the only hash
// distribution accepts. The minimum cost keeps each authenticated request
// cheap; these are throwaway passwords.
func writeHtpasswd(path string, users map[string]string) error {
	names := make([]string, 0, len(users))
	for u := range users {
		if strings.ContainsAny(u, ":\n") {
			return fmt.Errorf("htpasswd user %q: contains ':' or a newline", u)
		}
		names = append(names, u)
	}
	sort.Strings(names)
	var b bytes.Buffer
	for _, u := range names {
		h, err := bcrypt.GenerateFromPassword([]byte(users[u]), bcrypt.MinCost)
		if err != nil {
			return fmt.Errorf("hash password of %s: %w", u, err)
		}
		fmt.Fprintf(&b, "%s:%s\n", u, h)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// freePort asks the kernel for a free loopback TCP port. Another process
// may take it before the registry binds it; Start retries in that case.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("pick a free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// lockedBuffer collects process output written from exec's copy goroutine
// while tests may read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
