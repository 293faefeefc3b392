package imagepull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/opencontainers/go-digest"
)

// spool holds layer blobs exactly as the registry serves them (still
// compressed, and still encrypted for encrypted layers) while they are
// downloaded, so that the layers of an image download concurrently while
// they are applied one after the other. A blob can be read while it is
// being written: the layer whose turn it is streams through the applier as
// its bytes arrive, and its digest verdict comes when the download ends.
// Concurrent pulls that need the same blob share one download. A blob is
// deleted when its last user releases it.
type spool struct {
	dir string

	mu      sync.Mutex
	entries map[digest.Digest]*spoolEntry
}

type spoolEntry struct {
	path   string
	refs   int // guarded by spool.mu
	cancel context.CancelFunc

	mu       sync.Mutex
	grew     *sync.Cond // signalled when written grows or the download ends
	written  int64
	finished bool
	err      error
}

func newSpool(dir string) (*spool, error) {
	// Blobs left by a crash are garbage.
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clean blob spool %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create blob spool %s: %w", dir, err)
	}
	return &spool{dir: dir, entries: map[digest.Digest]*spoolEntry{}}, nil
}

// spooled is one user's handle on a spooled blob.
type spooled struct {
	s       *spool
	d       digest.Digest
	e       *spoolEntry
	release sync.Once
}

// get starts downloading blob d with fetch, unless a download of it is
// already under way, and returns at once. fetch writes the blob to w and
// must verify it (size and digest); it runs on a context that ends when the
// last user releases the blob, not when the caller's does, since other
// pulls may share it. Release must be called when the blob is consumed.
func (s *spool) get(ctx context.Context, d digest.Digest, fetch func(ctx context.Context, w io.Writer) error) (*spooled, error) {
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("blob digest %q: %w", d, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.entries[d]; ok {
		e.refs++
		return &spooled{s: s, d: d, e: e}, nil
	}
	f, err := os.OpenFile(filepath.Join(s.dir, d.Encoded()), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool blob %s: %w", d, err)
	}
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e := &spoolEntry{path: f.Name(), refs: 1, cancel: cancel}
	e.grew = sync.NewCond(&e.mu)
	s.entries[d] = e
	go func() {
		err := fetch(fctx, &spoolWriter{f: f, e: e})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		e.mu.Lock()
		e.finished, e.err = true, err
		e.grew.Broadcast()
		e.mu.Unlock()
		if err != nil {
			// A failed download is not shared with later users.
			s.mu.Lock()
			if s.entries[d] == e {
				delete(s.entries, d)
			}
			s.mu.Unlock()
		}
	}()
	return &spooled{s: s, d: d, e: e}, nil
}

// spoolWriter writes to the spool file and wakes the readers.
type spoolWriter struct {
	f *os.File
	e *spoolEntry
}

func (w *spoolWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.e.mu.Lock()
	w.e.written += int64(n)
	w.e.grew.Broadcast()
	w.e.mu.Unlock()
	return n, err
}

// Open returns a reader of the blob from its start that follows the
// download: it blocks for bytes not yet written and ends with the
// download's error if it failed. The bytes it returns are unverified until
// Wait reports success.
// Reads give up when ctx ends.
func (b *spooled) Open(ctx context.Context) (io.ReadCloser, error) {
	f, err := os.Open(b.e.path)
	if err != nil {
		return nil, fmt.Errorf("read spooled blob %s: %w", b.d, err)
	}
	r := &follower{ctx: ctx, f: f, e: b.e}
	r.stop = context.AfterFunc(ctx, func() {
		b.e.mu.Lock()
		b.e.grew.Broadcast()
		b.e.mu.Unlock()
	})
	return r, nil
}

// Wait blocks until the download ends and returns its verdict.
func (b *spooled) Wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		b.e.mu.Lock()
		b.e.grew.Broadcast()
		b.e.mu.Unlock()
	})
	defer stop()
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	for !b.e.finished {
		if err := ctx.Err(); err != nil {
			return err
		}
		b.e.grew.Wait()
	}
	return b.e.err
}

// Result reports whether the download has ended, and its verdict if so.
func (b *spooled) Result() (finished bool, err error) {
	b.e.mu.Lock()
	defer b.e.mu.Unlock()
	return b.e.finished, b.e.err
}

// Release gives the blob up; the last user's release stops a download
// still under way and deletes the file.
func (b *spooled) Release() {
	b.release.Do(func() {
		b.s.mu.Lock()
		defer b.s.mu.Unlock()
		b.e.refs--
		if b.e.refs > 0 {
			return
		}
		if b.s.entries[b.d] == b.e {
			delete(b.s.entries, b.d)
		}
		b.e.cancel()
		os.Remove(b.e.path)
	})
}

type follower struct {
	ctx  context.Context
	stop func() bool
	f    *os.File
	e    *spoolEntry
	off  int64
}

func (r *follower) Read(p []byte) (int, error) {
	for {
		n, err := r.f.Read(p)
		if n > 0 {
			r.off += int64(n)
			return n, nil
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		r.e.mu.Lock()
		for !r.e.finished && r.e.written <= r.off && r.ctx.Err() == nil {
			r.e.grew.Wait()
		}
		if err := r.ctx.Err(); err != nil {
			r.e.mu.Unlock()
			return 0, err
		}
		more, finished, ferr := r.e.written > r.off, r.e.finished, r.e.err
		r.e.mu.Unlock()
		switch {
		case more:
			continue
		case finished && ferr != nil:
			return 0, ferr
		default:
			return 0, io.EOF
		}
	}
}

func (r *follower) Close() error {
	r.stop()
	return r.f.Close()
}
