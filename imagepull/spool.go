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

// spool holds layer blobs fetched ahead of their turn, exactly as the
// registry served them (still compressed, and still encrypted for encrypted
// layers), each verified against its digest. Concurrent pulls that need the
// same blob share one download. A blob is deleted when its last user
// releases it.
type spool struct {
	dir string

	mu      sync.Mutex
	entries map[digest.Digest]*spoolEntry
}

type spoolEntry struct {
	path string
	refs int
	done chan struct{}
	err  error
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

// get returns the path of the verified blob d, fetching it with fetch if no
// other pull is already doing so. fetch writes the blob to w and must
// verify it (size and digest). release must be called once the blob has
// been consumed.
func (s *spool) get(ctx context.Context, d digest.Digest, fetch func(ctx context.Context, w io.Writer) error) (path string, release func(), err error) {
	if err := d.Validate(); err != nil {
		return "", nil, fmt.Errorf("blob digest %q: %w", d, err)
	}
	for {
		s.mu.Lock()
		e, ok := s.entries[d]
		if !ok {
			e = &spoolEntry{path: filepath.Join(s.dir, d.Encoded()), refs: 1, done: make(chan struct{})}
			s.entries[d] = e
			s.mu.Unlock()
			e.err = s.fill(ctx, e.path, fetch)
			if e.err != nil {
				s.mu.Lock()
				delete(s.entries, d)
				s.mu.Unlock()
			}
			close(e.done)
			if e.err != nil {
				return "", nil, e.err
			}
			return e.path, s.releaser(d, e), nil
		}
		e.refs++
		s.mu.Unlock()
		select {
		case <-e.done:
		case <-ctx.Done():
			s.releaser(d, e)()
			return "", nil, ctx.Err()
		}
		if e.err == nil {
			return e.path, s.releaser(d, e), nil
		}
		s.releaser(d, e)()
		// The pull that fetched it failed; if that was only its own
		// cancellation, try ourselves.
		if !errors.Is(e.err, context.Canceled) || ctx.Err() != nil {
			return "", nil, e.err
		}
	}
}

func (s *spool) fill(ctx context.Context, path string, fetch func(context.Context, io.Writer) error) (err error) {
	f, err := os.OpenFile(path+".part", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("spool blob: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(f.Name())
			return
		}
		err = os.Rename(f.Name(), path)
	}()
	return fetch(ctx, f)
}

func (s *spool) releaser(d digest.Digest, e *spoolEntry) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			e.refs--
			if e.refs == 0 {
				if s.entries[d] == e {
					delete(s.entries, d)
				}
				os.Remove(e.path)
			}
		})
	}
}
