package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/service"
)

// fakePuller answers every pull with one digest; block, if set, holds each
// pull until it is closed or the pull's context ends.
type fakePuller struct {
	pulls, removes atomic.Int32
	block          chan struct{}
	started        chan struct{} // receives once per pull, if set
}

const fakeDigest = digest.Digest("sha256:0000000000000000000000000000000000000000000000000000000000000001")

func (p *fakePuller) Pull(ctx context.Context, image, bundle string) (digest.Digest, error) {
	p.pulls.Add(1)
	if p.started != nil {
		p.started <- struct{}{}
	}
	if p.block != nil {
		select {
		case <-p.block:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return fakeDigest, nil
}

func (p *fakePuller) Remove(ctx context.Context, bundle string) error {
	p.removes.Add(1)
	return nil
}

// opener counts opens and fails the first failures of them.
type opener struct {
	opens    atomic.Int32
	failures int32
	p        *fakePuller
}

func (o *opener) open(ctx context.Context) (service.Puller, error) {
	if n := o.opens.Add(1); n <= o.failures {
		return nil, errors.New("registry configuration: KBS unreachable")
	}
	return o.p, nil
}

// TestLazyPullerOpen checks that the puller opens on the first pull, not
// before, once however many pulls race for it, and again after a failed
// open.
func TestLazyPullerOpen(t *testing.T) {
	tests := []struct {
		name       string
		failures   int32 // opens that fail first
		concurrent int   // pulls after the failing ones, at once
		wantOpens  int32
	}{
		{"opens once", 0, 1, 1},
		{"concurrent first pulls open once", 0, 8, 1},
		{"a failed open is retried", 2, 3, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			workDir := filepath.Join(t.TempDir(), "image")
			o := &opener{failures: tt.failures, p: &fakePuller{}}
			l := newLazyPuller(workDir, o.open)
			if o.opens.Load() != 0 || l.current() != nil {
				t.Fatal("opened before the first pull")
			}
			ctx := context.Background()
			for range tt.failures {
				_, err := l.Pull(ctx, "registry.example/app:1", "/run/bundle")
				if err == nil || !strings.Contains(err.Error(), workDir) || !strings.Contains(err.Error(), "KBS unreachable") {
					t.Fatalf("pull with a failing open: %v; want the open's error naming %s", err, workDir)
				}
			}
			var wg sync.WaitGroup
			for range tt.concurrent {
				wg.Go(func() {
					if d, err := l.Pull(ctx, "registry.example/app:1", "/run/bundle"); err != nil || d != fakeDigest {
						t.Errorf("pull: %s, %v", d, err)
					}
				})
			}
			wg.Wait()
			if err := l.Remove(ctx, "/run/bundle"); err != nil {
				t.Fatal(err)
			}
			if got := o.opens.Load(); got != tt.wantOpens {
				t.Errorf("%d opens, want %d", got, tt.wantOpens)
			}
			if got := o.p.pulls.Load(); got != int32(tt.concurrent) {
				t.Errorf("%d pulls reached the puller, want %d", got, tt.concurrent)
			}
			if o.p.removes.Load() != 1 {
				t.Errorf("%d removes reached the puller, want 1", o.p.removes.Load())
			}
		})
	}
}

// TestLazyPullerBeforeMount checks the secure mounter's BeforeMount hook:
// anything goes before the puller is open; afterwards a mount point that
// is, contains or is inside the work dir is refused with
// FailedPrecondition, symbolic links resolved.
func TestLazyPullerBeforeMount(t *testing.T) {
	root := t.TempDir()
	workDir := filepath.Join(root, "run", "kata-containers", "image")
	if err := os.MkdirAll(filepath.Join(workDir, "store"), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "link-to-image")
	if err := os.Symlink(workDir, link); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		mountPoint string
		refused    bool
	}{
		{"the work dir", workDir, true},
		{"the work dir with a trailing slash", workDir + "/", true},
		{"a parent", filepath.Join(root, "run"), true},
		{"the root", "/", true},
		{"inside", filepath.Join(workDir, "store"), true},
		{"a symbolic link to it", link, true},
		{"a sibling sharing the prefix", workDir + "2", false},
		{"elsewhere", filepath.Join(root, "run", "secure"), false},
	}
	l := newLazyPuller(workDir, (&opener{p: &fakePuller{}}).open)
	for _, tt := range tests {
		if err := l.beforeMount(tt.mountPoint); err != nil {
			t.Errorf("%s: refused before the puller is open: %v", tt.name, err)
		}
	}
	if _, err := l.Pull(context.Background(), "registry.example/app:1", "/run/bundle"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := l.beforeMount(tt.mountPoint)
			if !tt.refused {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("allowed")
			}
			if !strings.Contains(err.Error(), workDir) {
				t.Errorf("error %q does not name the work dir", err)
			}
			if service.Classify(err) != codes.FailedPrecondition {
				t.Errorf("error %q is %s, want FailedPrecondition", err, service.Classify(err))
			}
		})
	}
}

// blockingMounter holds each mount until release is closed.
type blockingMounter struct {
	started chan string
	release chan struct{}
	closed  atomic.Bool
}

func (m *blockingMounter) SecureMount(ctx context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error {
	m.started <- mountPoint
	<-m.release
	return nil
}

func (m *blockingMounter) Close(ctx context.Context) error {
	m.closed.Store(true)
	return nil
}

// TestLazyPullerGuardsMounts checks that a secure mount made before the
// puller is open holds off the open until the mount is done, so kata can
// mount an encrypted disk on the work dir and then pull onto it.
func TestLazyPullerGuardsMounts(t *testing.T) {
	workDir := filepath.Join(t.TempDir(), "image")
	o := &opener{p: &fakePuller{}}
	l := newLazyPuller(workDir, o.open)
	m := &blockingMounter{started: make(chan string, 1), release: make(chan struct{})}
	guarded := l.guardMounts(m)

	ctx := context.Background()
	mounted := make(chan error, 1)
	go func() { mounted <- guarded.SecureMount(ctx, "block-device", nil, nil, workDir) }()
	if got := <-m.started; got != workDir {
		t.Fatalf("mounting %s, want %s", got, workDir)
	}
	pulled := make(chan error, 1)
	go func() {
		_, err := l.Pull(ctx, "registry.example/app:1", "/run/bundle")
		pulled <- err
	}()
	select {
	case err := <-pulled:
		t.Fatalf("the pull finished (%v) while the work dir was being mounted", err)
	case <-time.After(200 * time.Millisecond):
	}
	if o.opens.Load() != 0 {
		t.Fatal("the puller opened while the work dir was being mounted")
	}
	close(m.release)
	if err := <-mounted; err != nil {
		t.Fatal(err)
	}
	if err := <-pulled; err != nil {
		t.Fatal(err)
	}
	if o.opens.Load() != 1 {
		t.Fatalf("%d opens after the mount, want 1", o.opens.Load())
	}
	// Once open, the mounter's own BeforeMount refuses the work dir; the
	// guard no longer serialises mounts.
	if err := l.beforeMount(workDir); err == nil {
		t.Error("a mount on the open work dir was allowed")
	}
	other := filepath.Join(t.TempDir(), "secure")
	go func() { mounted <- guarded.SecureMount(ctx, "block-device", nil, nil, other) }()
	if got := <-m.started; got != other {
		t.Fatalf("mounting %s, want %s", got, other)
	}
	if err := <-mounted; err != nil {
		t.Fatal(err)
	}
	if err := guarded.Close(ctx); err != nil || !m.closed.Load() {
		t.Fatalf("Close: %v, reached the mounter: %v", err, m.closed.Load())
	}
}

// TestLazyPullerDrain checks shutdown: drain waits for the pulls in
// progress and refuses new ones with Unavailable.
func TestLazyPullerDrain(t *testing.T) {
	p := &fakePuller{block: make(chan struct{}), started: make(chan struct{}, 1)}
	l := newLazyPuller(t.TempDir(), (&opener{p: p}).open)
	pulled := make(chan error, 1)
	go func() {
		_, err := l.Pull(context.Background(), "registry.example/app:1", "/run/bundle")
		pulled <- err
	}()
	<-p.started
	if err := l.drain(100 * time.Millisecond); err == nil {
		t.Fatal("drain returned with a pull in progress")
	}
	if _, err := l.Pull(context.Background(), "registry.example/app:2", "/run/bundle2"); status.Code(err) != codes.Unavailable {
		t.Fatalf("pull while draining: %v, want Unavailable", err)
	}
	drained := make(chan error, 1)
	go func() { drained <- l.drain(10 * time.Second) }()
	close(p.block)
	if err := <-pulled; err != nil {
		t.Fatal(err)
	}
	if err := <-drained; err != nil {
		t.Fatal(err)
	}
	if n := p.pulls.Load(); n != 1 {
		t.Fatalf("%d pulls reached the puller, want 1", n)
	}
}
