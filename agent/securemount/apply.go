package securemount

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// apply carries out a checked request, pushing onto v the undo step of
// every step it completes.
func (m *Mounter) apply(ctx context.Context, r *request, v *volume, key []byte) error {
	// 1. The mount point directory, or the symlink's parent.
	dir := r.mountPoint
	if r.target == targetDevice {
		dir = filepath.Dir(r.mountPoint)
	}
	created, err := mkdirAll(dir)
	if len(created) > 0 {
		v.push("remove created directories", func(context.Context) error { return removeDirs(created) })
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}

	// 2. Format an empty device; an ephemeral one gets its header in
	// memory (HeaderDir), never on the device.
	header := ""
	if r.source == sourceEmpty {
		if r.ephemeral() {
			header, err = m.newHeader(r.mapper)
			if header != "" {
				h := header
				v.push("remove LUKS2 header "+h, func(context.Context) error { return removeFile(h) })
			}
			if err != nil {
				return err
			}
		}
		if err := m.step(ctx, m.formatCmd(r, header, key)); err != nil {
			return fmt.Errorf("format %s as LUKS2: %w", r.device, err)
		}
	}

	// 3. Open the mapping. A detached header is no longer needed once the
	// mapping is active: the kernel holds the volume key.
	if err := m.step(ctx, m.openCmd(r, header, key)); err != nil {
		return fmt.Errorf("open %s as %s: %w", r.device, r.mapper, err)
	}
	v.push("close mapping "+r.mapper, func(ctx context.Context) error { return m.closeMapping(ctx, r.mapper) })
	if header != "" {
		if err := removeFile(header); err != nil {
			return fmt.Errorf("remove LUKS2 header: %w", err)
		}
	}
	dev := m.mapperPath(r.mapper)

	// 4. Expose it.
	if r.target == targetDevice {
		if err := os.Symlink(dev, r.mountPoint); err != nil {
			return fmt.Errorf("link %s to %s: %w", r.mountPoint, dev, err)
		}
		v.push("remove symlink "+r.mountPoint, func(context.Context) error { return m.removeSymlink(r.mountPoint, dev) })
		return nil
	}
	if r.source == sourceEmpty {
		if err := m.mkfs(ctx, r, dev); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.sys.mount(dev, r.mountPoint, r.fsType, r.mountFlags); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, r.fsType, r.mountPoint, err)
	}
	v.push("unmount "+r.mountPoint, func(context.Context) error { return m.unmount(r.mountPoint) })
	return nil
}

// step runs c unless ctx is done.
func (m *Mounter) step(ctx context.Context, c cmd) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.log.Debug("secure mount step", "cmd", c.String())
	_, err := m.sys.run(ctx, c)
	return err
}

// closeMapping closes a mapping, retrying a little: right after an
// unmount, udev's probe may still hold the device. A mapping that is not
// active (exit code 4) counts as closed.
func (m *Mounter) closeMapping(ctx context.Context, name string) error {
	for i := 1; ; i++ {
		_, err := m.sys.run(ctx, m.cs("close", name))
		switch {
		case err == nil:
			return nil
		case exitCode(err) == 4:
			m.log.Warn("mapping was already closed", "mapper", name, "err", err)
			return nil
		case i >= m.closeTries || ctx.Err() != nil:
			return err
		}
		select {
		case <-time.After(m.retryDelay):
		case <-ctx.Done():
			return err
		}
	}
}

// unmount unmounts target; one that is no longer mounted counts as done.
func (m *Mounter) unmount(target string) error {
	err := m.sys.unmount(target)
	if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		m.log.Warn("mount point was not mounted any more", "mountPoint", target, "err", err)
		return nil
	}
	return err
}

// removeSymlink removes the device-target symlink, if it is still ours.
func (m *Mounter) removeSymlink(p, want string) error {
	got, err := os.Readlink(p)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case got != want:
		m.log.Warn("device-target symlink was replaced; left alone", "mountPoint", p, "target", got)
		return nil
	}
	return os.Remove(p)
}

// newHeader creates an empty detached header file for mapping name in
// HeaderDir. It returns the path also on a later error, for removal.
func (m *Mounter) newHeader(name string) (string, error) {
	if err := os.MkdirAll(m.cfg.HeaderDir, 0o700); err != nil {
		return "", fmt.Errorf("create LUKS2 header directory: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(m.cfg.HeaderDir, &st); err == nil && st.Type != unix.TMPFS_MAGIC && st.Type != unix.RAMFS_MAGIC {
		m.log.Warn("LUKS2 header directory is not a tmpfs: ephemeral headers touch a disk", "dir", m.cfg.HeaderDir)
	}
	p := filepath.Join(m.cfg.HeaderDir, name+".header")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("create LUKS2 header %s: %w", p, err)
	}
	err = f.Truncate(HeaderSize)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return p, fmt.Errorf("size LUKS2 header %s: %w", p, err)
	}
	return p, nil
}

// mkdirAll creates dir and its missing parents 0700 and returns the
// directories it created, outermost first (also on error).
func mkdirAll(dir string) ([]string, error) {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		_, err := os.Lstat(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		missing = append(missing, p)
		if p == filepath.Dir(p) {
			break
		}
	}
	var created []string
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o700); err != nil {
			return created, err
		}
		created = append(created, missing[i])
	}
	return created, nil
}

// removeDirs removes directories mkdirAll created, innermost first. One
// already gone is fine; one that is not empty (another volume's mount
// point shares the parent) is left, with its parents.
func removeDirs(created []string) error {
	for i := len(created) - 1; i >= 0; i-- {
		err := os.Remove(created[i])
		switch {
		case err == nil, errors.Is(err, fs.ErrNotExist):
		case errors.Is(err, unix.ENOTEMPTY), errors.Is(err, unix.EEXIST):
			return nil
		default:
			return err
		}
	}
	return nil
}

func removeFile(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
