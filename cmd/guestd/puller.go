package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/service"
)

// lazyPuller is the data hub's image puller, opened by the first pull
// rather than at start-up: kata may SecureMount an encrypted disk onto the
// image work dir before it pulls anything, and the layer store has to be
// opened on that disk, not under it. A failed open (the KBS unreachable for
// the registry configuration, say) is retried by the next pull, as
// upstream's data hub retries its lazy image client.
//
// Once the puller is open, secure mounts on, over or inside the work dir
// are refused (beforeMount). Secure mounts made before it is open hold off
// the open until they are done (guardMounts), so a mount and the first
// pull cannot interleave.
//
// On shutdown (drain) new pulls are refused and the daemon waits for the
// pulls in progress, which the transports have cancelled, to clean up.
type lazyPuller struct {
	workDir string
	open    func(context.Context) (service.Puller, error)
	// sem is held while opening, and by a secure mount made before the
	// open.
	sem chan struct{}

	mu       sync.Mutex
	p        service.Puller
	draining bool
	active   sync.WaitGroup // pulls and removes in progress
}

func newLazyPuller(workDir string, open func(context.Context) (service.Puller, error)) *lazyPuller {
	return &lazyPuller{workDir: filepath.Clean(workDir), open: open, sem: make(chan struct{}, 1)}
}

var _ service.Puller = (*lazyPuller)(nil)

// Pull opens the puller if needed, then pulls.
func (l *lazyPuller) Pull(ctx context.Context, image, bundle string) (digest.Digest, error) {
	if err := l.enter(); err != nil {
		return "", err
	}
	defer l.active.Done()
	p, err := l.get(ctx)
	if err != nil {
		return "", err
	}
	return p.Pull(ctx, image, bundle)
}

// Remove opens the puller if needed, then removes the bundle.
func (l *lazyPuller) Remove(ctx context.Context, bundle string) error {
	if err := l.enter(); err != nil {
		return err
	}
	defer l.active.Done()
	p, err := l.get(ctx)
	if err != nil {
		return err
	}
	return p.Remove(ctx, bundle)
}

// enter registers a call, unless the daemon is shutting down.
func (l *lazyPuller) enter() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return status.Error(codes.Unavailable, "guestd is shutting down")
	}
	l.active.Add(1)
	return nil
}

// current returns the open puller, or nil.
func (l *lazyPuller) current() service.Puller {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.p
}

func (l *lazyPuller) get(ctx context.Context) (service.Puller, error) {
	if p := l.current(); p != nil {
		return p, nil
	}
	if err := l.lock(ctx); err != nil {
		return nil, fmt.Errorf("open the image puller in %s: %w", l.workDir, err)
	}
	defer l.unlock()
	if p := l.current(); p != nil {
		return p, nil
	}
	p, err := l.open(ctx)
	if err != nil {
		return nil, fmt.Errorf("open the image puller in %s: %w", l.workDir, err)
	}
	l.mu.Lock()
	l.p = p
	l.mu.Unlock()
	return p, nil
}

func (l *lazyPuller) lock(ctx context.Context) error {
	select {
	case l.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *lazyPuller) unlock() { <-l.sem }

// drain refuses new pulls and waits up to timeout for those in progress.
func (l *lazyPuller) drain(timeout time.Duration) error {
	l.mu.Lock()
	l.draining = true
	l.mu.Unlock()
	done := make(chan struct{})
	go func() { l.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("image pulls still cleaning up after %v", timeout)
	}
}

// workDirInUseError refuses a secure mount that would cover or sit in the
// open puller's work dir.
type workDirInUseError struct{ mountPoint, workDir string }

func (e *workDirInUseError) Error() string {
	return fmt.Sprintf("secure mount on %s: the image work dir %s is in use by the image puller (mount it before the first PullImage)", e.mountPoint, e.workDir)
}

// GRPCStatus makes the refusal FailedPrecondition.
func (e *workDirInUseError) GRPCStatus() *status.Status {
	return status.New(codes.FailedPrecondition, e.Error())
}

// beforeMount is the secure mounter's BeforeMount hook: once the puller is
// open it refuses a mount point that equals, contains or is inside the
// work dir (compared both as given and with symbolic links resolved).
func (l *lazyPuller) beforeMount(mountPoint string) error {
	if l.current() == nil {
		return nil
	}
	for _, m := range pathForms(mountPoint) {
		for _, w := range pathForms(l.workDir) {
			if within(m, w) || within(w, m) {
				return &workDirInUseError{mountPoint: mountPoint, workDir: l.workDir}
			}
		}
	}
	return nil
}

// pathForms returns p cleaned and, when it exists, with symbolic links
// resolved.
func pathForms(p string) []string {
	forms := []string{filepath.Clean(p)}
	if r, err := filepath.EvalSymlinks(p); err == nil && r != forms[0] {
		forms = append(forms, r)
	}
	return forms
}

// within reports whether p is dir or below it; both are clean and absolute.
func within(p, dir string) bool {
	return p == dir || dir == "/" || strings.HasPrefix(p, dir+"/")
}

// guardMounts wraps m so that a secure mount made before the puller is
// open holds the open off until it is done. It keeps m's Close.
func (l *lazyPuller) guardMounts(m service.SecureMounter) *guardedMounter {
	return &guardedMounter{m: m, l: l}
}

type guardedMounter struct {
	m service.SecureMounter
	l *lazyPuller
}

func (g *guardedMounter) SecureMount(ctx context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error {
	if g.l.current() == nil {
		if err := g.l.lock(ctx); err != nil {
			return fmt.Errorf("secure mount on %s: %w", mountPoint, err)
		}
		defer g.l.unlock()
	}
	return g.m.SecureMount(ctx, volumeType, options, flags, mountPoint)
}

// Close closes the wrapped mounter if it can be closed.
func (g *guardedMounter) Close(ctx context.Context) error {
	if c, ok := g.m.(interface{ Close(context.Context) error }); ok {
		return c.Close(ctx)
	}
	return nil
}
