package securemount

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// maxUevent bounds the uevent file read.
const maxUevent = 64 << 10

// mapperPath is the node of mapping name.
func (m *Mounter) mapperPath(name string) string {
	return filepath.Join(m.cfg.DevDir, "mapper", name)
}

// check resolves the device and checks the request against the system
// and the volumes already set up. It changes nothing.
func (m *Mounter) check(r *request) (*volume, error) {
	dev, rdev, err := m.resolveDevice(r)
	if err != nil {
		return nil, err
	}
	r.device = dev
	ma, mi := unix.Major(rdev), unix.Minor(rdev)

	m.mu.Lock()
	for _, v := range m.vols {
		var err error
		switch {
		case v.rdev == rdev:
			err = fmt.Errorf("%w: device %s (%d:%d) is already secure-mounted at %q", ErrExists, dev, ma, mi, v.info.MountPoint)
		case v.info.MountPoint == r.mountPoint:
			err = fmt.Errorf("%w: mount point already has a secure mount (device %s)", ErrExists, v.info.Device)
		case v.info.Mapper == r.mapper:
			err = fmt.Errorf("%w: mapper name %q is already used for %q", ErrExists, r.mapper, v.info.MountPoint)
		}
		if err != nil {
			m.mu.Unlock()
			return nil, err
		}
	}
	m.mu.Unlock()

	if _, err := os.Lstat(m.mapperPath(r.mapper)); err == nil {
		return nil, fmt.Errorf("%w: mapping %s already exists", ErrExists, m.mapperPath(r.mapper))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("check mapping %s: %w", r.mapper, err)
	}
	if err := m.checkInUse(r, dev, ma, mi); err != nil {
		return nil, err
	}
	if err := checkMountPointState(r); err != nil {
		return nil, err
	}
	switch {
	case r.key.kind == keySealed && m.cfg.Unsealer == nil:
		return nil, fmt.Errorf("%w: the key is a sealed secret but no unsealer is configured", ErrNoKeySource)
	case r.key.kind == keyKBS && m.cfg.KBC == nil:
		return nil, fmt.Errorf("%w: the key is %s but no KBC is configured (agent.aa_kbc_params, or [kbc] in the CDH config)", ErrNoKeySource, r.key.uri)
	}
	return &volume{
		info: Volume{
			MountPoint: r.mountPoint,
			Device:     dev,
			Mapper:     r.mapper,
			Target:     r.target,
			Ephemeral:  r.ephemeral(),
			Integrity:  r.integrity,
		},
		rdev: rdev,
	}, nil
}

// resolveDevice returns the device path and number: deviceId wins, as
// upstream, but a devicePath given as well must name the same device.
func (m *Mounter) resolveDevice(r *request) (string, uint64, error) {
	if r.deviceID == "" {
		rdev, err := blockDev(r.devicePath)
		return r.devicePath, rdev, err
	}
	ma, mi, err := parseDeviceID(r.deviceID)
	if err != nil {
		return "", 0, err
	}
	p, err := m.devicePathOf(ma, mi)
	if err != nil {
		return "", 0, err
	}
	rdev, err := blockDev(p)
	if err != nil {
		return "", 0, err
	}
	if unix.Major(rdev) != ma || unix.Minor(rdev) != mi {
		return "", 0, fmt.Errorf("%w: deviceId %s resolves to %s, which is device %d:%d", ErrNoDevice, r.deviceID, p, unix.Major(rdev), unix.Minor(rdev))
	}
	if r.devicePath != "" {
		prdev, err := blockDev(r.devicePath)
		if err != nil {
			return "", 0, err
		}
		if prdev != rdev {
			return "", 0, fmt.Errorf("%w: deviceId %s (%s) and devicePath %s (%d:%d) are different devices", ErrInvalid, r.deviceID, p, r.devicePath, unix.Major(prdev), unix.Minor(prdev))
		}
	}
	return p, rdev, nil
}

// devicePathOf resolves MAJ:MIN through <SysDevBlock>/MAJ:MIN/uevent
// (DEVNAME=) to <DevDir>/<DEVNAME>, as upstream does.
func (m *Mounter) devicePathOf(ma, mi uint32) (string, error) {
	id := fmt.Sprintf("%d:%d", ma, mi)
	uevent := filepath.Join(m.cfg.SysDevBlock, id, "uevent")
	f, err := os.Open(uevent)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: deviceId %s (no %s)", ErrNoDevice, id, uevent)
	}
	if err != nil {
		return "", fmt.Errorf("resolve deviceId %s: %w", id, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, maxUevent))
	for sc.Scan() {
		name, ok := strings.CutPrefix(sc.Text(), "DEVNAME=")
		if !ok {
			continue
		}
		if !filepath.IsLocal(name) || strings.IndexByte(name, 0) >= 0 {
			return "", fmt.Errorf("%w: deviceId %s: %s has DEVNAME %q, not a name under %s", ErrNoDevice, id, uevent, name, m.cfg.DevDir)
		}
		return filepath.Join(m.cfg.DevDir, name), nil
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("resolve deviceId %s: read %s: %w", id, uevent, err)
	}
	return "", fmt.Errorf("%w: deviceId %s: %s has no DEVNAME", ErrNoDevice, id, uevent)
}

// blockDev returns the device number of the block device at p
// (following symlinks).
func blockDev(p string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("%w: %s does not exist", ErrNoDevice, p)
		}
		return 0, fmt.Errorf("stat device %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return 0, fmt.Errorf("%w: %s is not a block device", ErrInvalid, p)
	}
	return st.Rdev, nil
}

// checkInUse refuses a device that is mounted or held (by a
// device-mapper target, md, ...) and a mount point that is already one.
func (m *Mounter) checkInUse(r *request, dev string, ma, mi uint32) error {
	f, err := os.Open(m.mountinfo)
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, nil)
	if err != nil {
		return fmt.Errorf("read mount table %s: %w", m.mountinfo, err)
	}
	mp := r.mountPoint
	if p, err := filepath.EvalSymlinks(mp); err == nil {
		mp = p
	}
	for _, x := range mounts {
		if x.Major == int(ma) && x.Minor == int(mi) {
			return fmt.Errorf("%w: device %s is mounted at %s", ErrExists, dev, x.Mountpoint)
		}
		if x.Mountpoint == r.mountPoint || x.Mountpoint == mp {
			return fmt.Errorf("%w: mount point is already a mount point (of %s)", ErrExists, x.Source)
		}
	}
	holders := filepath.Join(m.cfg.SysDevBlock, fmt.Sprintf("%d:%d", ma, mi), "holders")
	ents, err := os.ReadDir(holders)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read holders of %s: %w", dev, err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: device %s is held by %s", ErrExists, dev, ents[0].Name())
	}
	return nil
}

// checkMountPointState: a fileSystem target needs a directory (not a
// symlink) or nothing; a device target needs nothing there, as it
// becomes a symlink.
func checkMountPointState(r *request) error {
	fi, err := os.Lstat(r.mountPoint)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("check mount point: %w", err)
	case r.target == targetDevice:
		return fmt.Errorf("%w: mount point exists (targetType %q makes it a symlink to the mapper device)", ErrExists, targetDevice)
	case fi.Mode()&fs.ModeSymlink != 0:
		return fmt.Errorf("%w: mount point is a symlink", ErrInvalid)
	case !fi.IsDir():
		return fmt.Errorf("%w: mount point exists and is not a directory", ErrInvalid)
	}
	return nil
}
