package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

const (
	rootfsName = "rootfs"
	configName = "config.json"
)

// Mount mounts at <bundle>/rootfs an overlay of the chain of layers ending
// at top (the lowerdirs, topmost first) with an upper and a work directory
// private to this bundle under the store root, and records the bundle so
// that its layers stay referenced until Remove. The bundle directory must
// exist; rootfs is created, or may exist as an empty, unmounted directory
// (not a symlink). Mounting a bundle that is already mounted fails with
// ErrExists; an unknown top fails with ErrNotFound. On failure nothing of
// the attempt remains.
func (s *Store) Mount(ctx context.Context, top digest.Digest, bundle string) error {
	if err := top.Validate(); err != nil {
		return fmt.Errorf("mount %q on %s: %w", top, bundle, err)
	}
	key, err := bundleKey(bundle)
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", top, bundle, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mount %s on %s: %w", top, key, err)
	}
	if fi, err := os.Stat(key); err != nil {
		return fmt.Errorf("mount %s on %s: bundle: %w", top, key, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("mount %s on %s: bundle is not a directory", top, key)
	}

	s.mu.Lock()
	if err := s.begin(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("mount %s on %s: %w", top, key, err)
	}
	defer s.ops.Done()
	if _, ok := s.bundles[key]; ok {
		s.mu.Unlock()
		return fmt.Errorf("mount %s on %s: bundle: %w", top, key, ErrExists)
	}
	l, ok := s.layers[top]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("mount %s on %s: layer: %w", top, key, ErrNotFound)
	}
	b := &bundleInfo{path: key, id: s.nextBundle, top: top, chain: l.chain(), state: bundleMounting}
	s.nextBundle++
	pin(b.chain)
	s.bundles[key] = b
	s.mu.Unlock()

	err = s.mountBundle(b)
	s.mu.Lock()
	if err != nil {
		unpin(b.chain)
		delete(s.bundles, key)
	} else {
		b.state = bundleMounted
	}
	s.mu.Unlock()
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", top, key, err)
	}
	return nil
}

// mountBundle does Mount's file system work; on failure it undoes it.
func (s *Store) mountBundle(b *bundleInfo) (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	rootfs := filepath.Join(b.path, rootfsName)
	created, err := mountpoint(rootfs)
	if err != nil {
		return err
	}
	if created {
		undo = append(undo, func() { _ = os.Remove(rootfs) })
	}
	if b.rootfs, err = filepath.EvalSymlinks(rootfs); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}

	// The record goes first: whatever exists of this bundle is found (and
	// cleaned, if not mounted) by the next Open.
	rec := bundleRecord{Version: recordVersion, ID: b.id, Bundle: b.path, Rootfs: b.rootfs, Top: b.top}
	recPath := s.bundleRecord(b.id)
	if err := writeRecord(s.tmpDir(), recPath, &rec); err != nil {
		return err
	}
	undo = append(undo, func() { _ = os.Remove(recPath) })

	dir, upper, work := s.bundleDir(b.id), s.upperDir(b.id), s.workDir(b.id)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("make bundle dir: %w", err)
	}
	undo = append(undo, func() { _ = os.RemoveAll(dir) })
	if err := os.Mkdir(upper, 0o755); err != nil {
		return fmt.Errorf("make upper dir: %w", err)
	}
	if err := os.Chmod(upper, 0o755); err != nil { // whatever the umask
		return fmt.Errorf("make upper dir: %w", err)
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return fmt.Errorf("make work dir: %w", err)
	}

	lowers := make([]string, len(b.chain))
	for i, l := range b.chain {
		lowers[i] = s.layerDir(l.id)
	}
	m := mount.Mount{
		Type:   "overlay",
		Source: "overlay",
		// core/mount rewrites a lowerdir option that would not fit the
		// mount data page into paths relative to layers/.
		Options: []string{
			"index=off",
			"lowerdir=" + strings.Join(lowers, ":"),
			"upperdir=" + upper,
			"workdir=" + work,
		},
	}
	if err := m.Mount(b.rootfs); err != nil {
		return fmt.Errorf("mount overlay of %d layers: %w", len(lowers), err)
	}
	return nil
}

// mountpoint makes sure path is an empty, unmounted real directory,
// creating it if it does not exist.
func mountpoint(path string) (created bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(path, 0o755); err != nil {
			return false, fmt.Errorf("make rootfs: %w", err)
		}
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("rootfs: %w", err)
	}
	if !fi.IsDir() {
		return false, fmt.Errorf("rootfs %s exists and is not a directory", path)
	}
	if m, err := mountinfo.Mounted(path); err != nil {
		return false, fmt.Errorf("rootfs: %w", err)
	} else if m {
		return false, fmt.Errorf("rootfs %s is already a mount point", path)
	}
	d, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("rootfs: %w", err)
	}
	defer d.Close()
	if _, err := d.Readdirnames(1); !errors.Is(err, io.EOF) {
		if err == nil {
			return false, fmt.Errorf("rootfs %s exists and is not empty", path)
		}
		return false, fmt.Errorf("rootfs: %w", err)
	}
	return false, nil
}

// Remove unmounts <bundle>/rootfs (detaching it lazily if it is busy),
// deletes the empty rootfs directory, the bundle's config.json, its upper
// and work directories and its record, and releases its layers. The bundle
// directory itself stays. Removing an unknown bundle returns nil and
// touches nothing; see the package documentation for the details.
func (s *Store) Remove(ctx context.Context, bundle string) error {
	key, err := bundleKey(bundle)
	if err != nil {
		return fmt.Errorf("remove %s: %w", bundle, err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", key, err)
	}
	s.mu.Lock()
	if err := s.begin(); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("remove %s: %w", key, err)
	}
	defer s.ops.Done()
	b, ok := s.bundles[key]
	if !ok {
		s.mu.Unlock()
		return nil
	}
	if b.state != bundleMounted {
		s.mu.Unlock()
		return fmt.Errorf("remove %s: %w", key, ErrBusy)
	}
	b.state = bundleRemoving
	s.mu.Unlock()

	lazy, err := s.removeBundle(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		b.state = bundleMounted // keep the record: Remove can be retried
		return fmt.Errorf("remove %s: %w", key, err)
	}
	delete(s.bundles, key)
	if !lazy {
		unpin(b.chain)
	}
	// else: the detached overlay may still be in use; its layers stay
	// referenced until the Store is reopened.
	return nil
}

// removeBundle does Remove's file system work and reports whether the
// overlay had to be detached lazily.
func (s *Store) removeBundle(b *bundleInfo) (lazy bool, err error) {
	if lazy, err = unmount(b.rootfs); err != nil {
		return false, fmt.Errorf("unmount %s: %w", b.rootfs, err)
	}
	// rmdir only: a non-empty rootfs holds files we did not put there.
	if err := os.Remove(b.rootfs); err != nil &&
		!errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		return lazy, fmt.Errorf("remove %s: %w", b.rootfs, err)
	}
	config := filepath.Join(b.path, configName)
	if err := removeFile(config); err != nil {
		return lazy, fmt.Errorf("remove %s: %w", config, err)
	}
	if err := os.RemoveAll(s.bundleDir(b.id)); err != nil {
		return lazy, fmt.Errorf("delete upper and work dirs: %w", err)
	}
	if err := removeFile(s.bundleRecord(b.id)); err != nil {
		return lazy, fmt.Errorf("remove bundle record: %w", err)
	}
	return lazy, nil
}

// unmount unmounts everything mounted on target (without following a
// symlink there). A busy mount is detached lazily, which is reported.
func unmount(target string) (lazy bool, err error) {
	const maxMounts = 64 // stacked mounts we are willing to peel off
	for range maxMounts {
		err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil, errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT):
			return lazy, nil // not (or no longer) a mount point
		case errors.Is(err, unix.EBUSY):
			if err := unix.Unmount(target, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil && !errors.Is(err, unix.EINVAL) {
				return lazy, err
			}
			lazy = true
		default:
			return lazy, err
		}
	}
	return lazy, fmt.Errorf("still mounted after %d unmounts", maxMounts)
}

// bundleKey is the absolute, cleaned bundle path: Mount and Remove must
// name a bundle the same way.
func bundleKey(bundle string) (string, error) {
	if bundle == "" {
		return "", errors.New("empty bundle path")
	}
	return filepath.Abs(bundle)
}
