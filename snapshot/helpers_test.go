package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// openStore opens a store in a fresh temporary directory, closed at the
// end of the test.
func openStore(t *testing.T) *Store {
	t.Helper()
	return openStoreAt(t, filepath.Join(t.TempDir(), "store"))
}

func openStoreAt(t *testing.T, root string) *Store {
	t.Helper()
	s, err := Open(context.Background(), root)
	if err != nil {
		t.Fatalf("Open(%s): %v", root, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func id(name string) digest.Digest { return digest.FromString(name) }

// files is an apply function that writes the given files (path -> content).
func files(m map[string]string) func(context.Context, string, []string) error {
	return func(_ context.Context, dir string, _ []string) error {
		for name, content := range m {
			p := filepath.Join(dir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return err
			}
		}
		return nil
	}
}

func ensure(t *testing.T, s *Store, chainID, parent digest.Digest, m map[string]string) {
	t.Helper()
	if err := s.EnsureLayer(context.Background(), chainID, parent, files(m)); err != nil {
		t.Fatalf("EnsureLayer(%s): %v", chainID, err)
	}
}

// newBundle makes a bundle directory whose rootfs is detached at the end
// of the test whatever happened (before the directory is deleted).
func newBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() { detachAll(filepath.Join(dir, rootfsName)) })
	return dir
}

func detachAll(path string) {
	for range 16 {
		if unix.Unmount(path, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW) != nil {
			return
		}
	}
}

func mountAt(t *testing.T, s *Store, top digest.Digest, bundle string) string {
	t.Helper()
	if err := s.Mount(context.Background(), top, bundle); err != nil {
		t.Fatalf("Mount(%s, %s): %v", top, bundle, err)
	}
	return filepath.Join(bundle, rootfsName)
}

func isMounted(t *testing.T, path string) bool {
	t.Helper()
	m, err := mountinfo.Mounted(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Mounted(%s): %v", path, err)
	}
	return m
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// names lists a directory, sorted; a missing directory is empty.
func names(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return out
}

func layerID(t *testing.T, s *Store, chainID digest.Digest) uint64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.layers[chainID]
	if !ok {
		t.Fatalf("layer %s not in store", chainID)
	}
	return l.id
}

func bundleID(t *testing.T, s *Store, bundle string) uint64 {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.bundles[bundle]
	if !ok {
		t.Fatalf("bundle %s not in store", bundle)
	}
	return b.id
}

// waitFor polls cond (called with s.mu held) until it holds.
func waitFor(t *testing.T, s *Store, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		ok := cond()
		s.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}
