package securemount

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/guestd/guestd/kbc"
)

// Defaults for Config fields left empty.
const (
	DefaultCryptsetup  = "cryptsetup"
	DefaultHeaderDir   = "/run/confidential-containers/cdh/luks-headers"
	DefaultSysDevBlock = "/sys/dev/block"
	DefaultDevDir      = "/dev"
)

// VolumeType is the only volume_type SecureMount serves.
const VolumeType = "block-device"

// Error classes. Every error SecureMount returns for one of these reasons
// wraps the class, so a service can map it to a status code.
var (
	// ErrInvalid: the request itself is malformed (an unknown option, a
	// bad value, a relative mount point, an unknown flag...). Nothing was
	// changed.
	ErrInvalid = errors.New("invalid secure mount request")
	// ErrUnsupported: the request names something this implementation
	// does not do (volume type, encryptionType zfs, a file system type).
	// Nothing was changed.
	ErrUnsupported = errors.New("unsupported")
	// ErrExists: the device, mount point or mapper name is already in use
	// (by this Mounter or by someone else). Nothing was changed.
	ErrExists = errors.New("already in use")
	// ErrNoDevice: deviceId or devicePath names no block device.
	ErrNoDevice = errors.New("no such block device")
	// ErrNotLUKS2: a sourceType=encrypted device has no LUKS2 header, or
	// one this package refuses to open (see the package doc).
	ErrNotLUKS2 = errors.New("not an acceptable LUKS2 device")
	// ErrNoKeySource: the key is a kbs:// URI but Config.KBC is nil, or a
	// sealed secret but Config.Unsealer is nil.
	ErrNoKeySource = errors.New("no key source configured")
)

// Unsealer unseals sealed secrets (*sealed.Unsealer is one).
type Unsealer interface {
	Unseal(ctx context.Context, secret []byte) ([]byte, error)
}

// Config configures New. The zero value works, minus kbs:// and sealed
// keys.
type Config struct {
	// KBC fetches kbs:// keys. nil: kbs:// keys are refused with
	// ErrNoKeySource.
	KBC kbc.Client
	// Unsealer unseals "sealed." keys. nil: refused with ErrNoKeySource.
	Unsealer Unsealer
	// Logger receives one line per mount and per step; never key
	// material. Default: discard.
	Logger *slog.Logger
	// BeforeMount, if set, is called once a request has been validated
	// and before anything is changed (before the key is fetched); an
	// error vetoes the mount and is returned wrapped.
	BeforeMount func(mountPoint string) error

	// Cryptsetup is the cryptsetup binary: a path, or a name looked up in
	// PATH and then /usr/sbin, /sbin, /usr/bin, /bin. mkfs.<type> is
	// looked up the same way. Default DefaultCryptsetup.
	Cryptsetup string
	// HeaderDir holds the detached LUKS2 headers of ephemeral volumes
	// (random key) while they are being formatted and opened; it should
	// be a tmpfs (a warning is logged otherwise). Created 0700 if
	// missing. Default DefaultHeaderDir, as upstream.
	HeaderDir string
	// SysDevBlock is where deviceId "MAJ:MIN" is looked up
	// (<SysDevBlock>/MAJ:MIN/uevent, DEVNAME=) and where device holders
	// are checked. Default DefaultSysDevBlock.
	SysDevBlock string
	// DevDir is where DEVNAME is resolved and where device-mapper nodes
	// appear (<DevDir>/mapper/<name>). Default DefaultDevDir.
	DevDir string
}

// Volume describes a volume a Mounter has set up and not yet torn down.
type Volume struct {
	// MountPoint is the mount point as requested.
	MountPoint string
	// Device is the backing block device (devicePath, or the node
	// deviceId resolved to).
	Device string
	// Mapper is the dm-crypt mapping name: the plaintext device is
	// <DevDir>/mapper/<Mapper>.
	Mapper string
	// Target is "device" (MountPoint is a symlink to the mapper device)
	// or "fileSystem" (the mapper device is mounted at MountPoint).
	Target string
	// Ephemeral reports a random key: the volume cannot be reopened once
	// closed.
	Ephemeral bool
	// Integrity reports whether the volume was formatted or verified to
	// have dm-integrity (dataIntegrity=true).
	Integrity bool
}

// Mounter serves SecureMount for volume_type "block-device" with LUKS2
// encryption. Its methods are safe for concurrent use; mounts and Close
// run one at a time.
type Mounter struct {
	cfg Config
	log *slog.Logger
	sys sys

	// busy serialises SecureMount and Close; a channel so that waiting
	// honours the context.
	busy chan struct{}

	mu   sync.Mutex // guards vols
	vols []*volume  // in mount order

	// mountinfo is the mount table read to find devices and mount points
	// already in use.
	mountinfo string
	// closeTries and retryDelay bound the retries of "cryptsetup close"
	// (udev may hold a just-unmounted device for a moment).
	closeTries int
	retryDelay time.Duration
	// rollbackTimeout bounds a rollback, which runs even when the
	// request's context is done.
	rollbackTimeout time.Duration
}

// New returns a Mounter for cfg.
func New(cfg Config) *Mounter {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return newMounter(cfg, realSys{log: log})
}

func newMounter(cfg Config, s sys) *Mounter {
	if isNil(cfg.KBC) {
		cfg.KBC = nil
	}
	if isNil(cfg.Unsealer) {
		cfg.Unsealer = nil
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Cryptsetup == "" {
		cfg.Cryptsetup = DefaultCryptsetup
	}
	if cfg.HeaderDir == "" {
		cfg.HeaderDir = DefaultHeaderDir
	}
	if cfg.SysDevBlock == "" {
		cfg.SysDevBlock = DefaultSysDevBlock
	}
	if cfg.DevDir == "" {
		cfg.DevDir = DefaultDevDir
	}
	return &Mounter{
		cfg:             cfg,
		log:             cfg.Logger.With("component", "securemount"),
		sys:             s,
		busy:            make(chan struct{}, 1),
		mountinfo:       "/proc/self/mountinfo",
		closeTries:      5,
		retryDelay:      200 * time.Millisecond,
		rollbackTimeout: 2 * time.Minute,
	}
}

// isNil reports whether v is nil or an interface holding a nil pointer
// (a nil *sealed.Unsealer passed as an Unsealer), which would panic when
// called.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Interface, reflect.Slice, reflect.Chan:
		return r.IsNil()
	}
	return false
}

func (m *Mounter) acquire(ctx context.Context) error {
	select {
	case m.busy <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (m *Mounter) release() { <-m.busy }

// SecureMount sets up the encrypted volume options describe and makes its
// plaintext available at mountPoint: see the package doc for the options,
// flags and steps. On failure every step already taken is undone (the
// error then also reports any undo step that failed; such a volume stays
// recorded so that Close retries it).
func (m *Mounter) SecureMount(ctx context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error {
	if err := m.acquire(ctx); err != nil {
		return fmt.Errorf("secure mount %q: %w", mountPoint, err)
	}
	defer m.release()
	if err := m.mount(ctx, volumeType, options, flags, mountPoint); err != nil {
		return fmt.Errorf("secure mount %q: %w", mountPoint, err)
	}
	return nil
}

// Close unmounts every file system and removes every symlink the Mounter
// made, closes every mapping it opened and removes the mount point
// directories it created, volume by volume in the reverse order of
// mounting. It carries on past a volume that fails and returns all
// failures; the failed volumes stay recorded, so Close can be called
// again. Close with nothing mounted returns nil.
func (m *Mounter) Close(ctx context.Context) error {
	if err := m.acquire(ctx); err != nil {
		return fmt.Errorf("close secure mounts: %w", err)
	}
	defer m.release()
	m.mu.Lock()
	vols := slices.Clone(m.vols)
	m.mu.Unlock()
	var errs []error
	for _, v := range slices.Backward(vols) {
		if err := m.undo(ctx, v); err != nil {
			errs = append(errs, fmt.Errorf("close secure mount %q: %w", v.info.MountPoint, err))
			continue
		}
		m.mu.Lock()
		m.vols = slices.DeleteFunc(m.vols, func(w *volume) bool { return w == v })
		m.mu.Unlock()
		m.log.Info("secure mount closed", "mountPoint", v.info.MountPoint, "mapper", v.info.Mapper)
	}
	return errors.Join(errs...)
}

// Volumes returns the volumes set up and not yet closed, in mount order.
func (m *Mounter) Volumes() []Volume {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Volume, len(m.vols))
	for i, v := range m.vols {
		out[i] = v.info
	}
	return out
}

// volume is a volume being set up or set up: what it is, and the steps
// that undo what was done, in the order they were done.
type volume struct {
	info Volume
	rdev uint64
	done []undoStep
}

type undoStep struct {
	what string
	fn   func(ctx context.Context) error
}

func (v *volume) push(what string, fn func(ctx context.Context) error) {
	v.done = append(v.done, undoStep{what: what, fn: fn})
}

// undo runs v's undo steps, last first, and stops at the first failure,
// leaving it and the steps before it in v for a later attempt.
func (m *Mounter) undo(ctx context.Context, v *volume) error {
	for len(v.done) > 0 {
		s := v.done[len(v.done)-1]
		if err := s.fn(ctx); err != nil {
			m.log.Warn("secure mount undo step failed", "mountPoint", v.info.MountPoint, "step", s.what, "err", err)
			return fmt.Errorf("%s: %w", s.what, err)
		}
		m.log.Debug("secure mount undo step", "mountPoint", v.info.MountPoint, "step", s.what)
		v.done = v.done[:len(v.done)-1]
	}
	return nil
}

// mount runs one request: validate, check, probe, veto, key, apply.
func (m *Mounter) mount(ctx context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error {
	r, err := parse(volumeType, options, flags, mountPoint)
	if err != nil {
		return err
	}
	v, err := m.check(r)
	if err != nil {
		return err
	}
	if r.source == sourceEncrypted {
		if err := m.probe(ctx, r); err != nil {
			return err
		}
	}
	if m.cfg.BeforeMount != nil {
		if err := m.cfg.BeforeMount(r.mountPoint); err != nil {
			return fmt.Errorf("vetoed: %w", err)
		}
	}
	key, err := m.key(ctx, r)
	if err != nil {
		return err
	}
	defer clear(key)
	if err := ctx.Err(); err != nil {
		return err
	}

	m.log.Info("secure mount", "mountPoint", r.mountPoint, "device", r.device, "mapper", r.mapper,
		"sourceType", r.source, "targetType", r.target, "filesystemType", r.fsType,
		"dataIntegrity", r.integrity, "key", r.key.describe(), "flags", r.flagNames)
	err = m.apply(ctx, r, v, key)
	if err == nil {
		m.mu.Lock()
		m.vols = append(m.vols, v)
		m.mu.Unlock()
		m.log.Info("secure mount done", "mountPoint", r.mountPoint, "mapper", r.mapper)
		return nil
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.rollbackTimeout)
	defer cancel()
	if uerr := m.undo(rctx, v); uerr != nil {
		// Keep what could not be undone, so that Close tries again.
		m.mu.Lock()
		m.vols = append(m.vols, v)
		m.mu.Unlock()
		return errors.Join(err, fmt.Errorf("roll back: %w", uerr))
	}
	m.log.Info("secure mount rolled back", "mountPoint", r.mountPoint, "err", err)
	return err
}
