package securemount

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/guestd/guestd/kbc/resource"
)

// Option names, as upstream's block-device plugin spells them.
const (
	optDeviceID       = "deviceId"
	optDevicePath     = "devicePath"
	optSourceType     = "sourceType"
	optEncryptionType = "encryptionType"
	optKey            = "key"
	optTargetType     = "targetType"
	optFilesystemType = "filesystemType"
	optMkfsOpts       = "mkfsOpts"
	optDataIntegrity  = "dataIntegrity"
	optMapperName     = "mapperName"
)

// Option values.
const (
	sourceEmpty     = "empty"
	sourceEncrypted = "encrypted"
	targetDevice    = "device"
	targetFS        = "fileSystem"
	encLUKS2        = "luks2"
	defaultFSType   = "ext4"
)

// maxMapperName bounds mapperName (device-mapper allows 127 bytes).
const maxMapperName = 100

// knownOption reports whether name is an option this package reads.
func knownOption(name string) bool {
	switch name {
	case optDeviceID, optDevicePath, optSourceType, optEncryptionType, optKey,
		optTargetType, optFilesystemType, optMkfsOpts, optDataIntegrity, optMapperName:
		return true
	}
	return false
}

// request is a validated SecureMount request.
type request struct {
	mountPoint string
	deviceID   string // "MAJ:MIN" as given, or ""
	devicePath string // as given, or ""
	device     string // the device to use, set by check
	source     string // sourceEmpty or sourceEncrypted
	target     string // targetDevice or targetFS
	fsType     string // fileSystem target only
	mkfsOpts   []string
	integrity  bool
	mapper     string
	key        keySpec
	mountFlags uintptr // fileSystem target
	readOnly   bool    // "ro"
	flagNames  []string
}

// ephemeral reports a random-key volume.
func (r *request) ephemeral() bool { return r.key.kind == keyRandom }

// invalid returns an ErrInvalid error about option name.
func invalid(name, format string, args ...any) error {
	return fmt.Errorf("%w: option %q: %s", ErrInvalid, name, fmt.Sprintf(format, args...))
}

// parse validates a request without looking at the system.
func parse(volumeType string, opts map[string]string, flags []string, mountPoint string) (*request, error) {
	if volumeType != VolumeType {
		return nil, fmt.Errorf("%w: volume type %q (only %q is)", ErrUnsupported, volumeType, VolumeType)
	}
	enc, ok := opts[optEncryptionType]
	switch {
	case !ok || enc == "":
		return nil, invalid(optEncryptionType, "missing (want %q)", encLUKS2)
	case enc != encLUKS2:
		return nil, fmt.Errorf("%w: encryptionType %q (only %q is)", ErrUnsupported, enc, encLUKS2)
	}
	names := make([]string, 0, len(opts))
	for k := range opts {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if !knownOption(k) {
			return nil, fmt.Errorf("%w: unknown option %q", ErrInvalid, k)
		}
	}
	if err := checkMountPoint(mountPoint); err != nil {
		return nil, err
	}
	r := &request{mountPoint: mountPoint}

	// The device.
	id, hasID := opts[optDeviceID]
	path, hasPath := opts[optDevicePath]
	if !hasID && !hasPath {
		return nil, fmt.Errorf("%w: neither %q nor %q is set", ErrInvalid, optDeviceID, optDevicePath)
	}
	if hasID {
		if _, _, err := parseDeviceID(id); err != nil {
			return nil, err
		}
		r.deviceID = id
	}
	if hasPath {
		if err := checkAbsClean(path); err != nil {
			return nil, invalid(optDevicePath, "%v", err)
		}
		r.devicePath = path
	}

	// What to do with it.
	switch r.source = opts[optSourceType]; r.source {
	case sourceEmpty, sourceEncrypted:
	case "":
		return nil, invalid(optSourceType, "missing (want %q or %q)", sourceEmpty, sourceEncrypted)
	default:
		return nil, invalid(optSourceType, "%q is not %q or %q", r.source, sourceEmpty, sourceEncrypted)
	}
	switch r.target = opts[optTargetType]; r.target {
	case targetDevice, targetFS:
	case "":
		return nil, invalid(optTargetType, "missing (want %q or %q)", targetDevice, targetFS)
	default:
		return nil, invalid(optTargetType, "%q is not %q or %q", r.target, targetDevice, targetFS)
	}
	fsType, hasFS := opts[optFilesystemType]
	switch {
	case r.target == targetDevice && hasFS:
		return nil, invalid(optFilesystemType, "applies only to targetType %q", targetFS)
	case r.target == targetFS:
		r.fsType = fsType
		if r.fsType == "" {
			r.fsType = defaultFSType
		}
		if !supportedFS(r.fsType) {
			return nil, fmt.Errorf("%w: filesystemType %q (want ext4, ext3, ext2 or xfs)", ErrUnsupported, r.fsType)
		}
	}
	r.mkfsOpts = strings.Fields(opts[optMkfsOpts])
	if len(r.mkfsOpts) > 0 && (r.source != sourceEmpty || r.target != targetFS) {
		return nil, invalid(optMkfsOpts, "applies only to sourceType %q with targetType %q (nothing is formatted otherwise)", sourceEmpty, targetFS)
	}
	switch di := opts[optDataIntegrity]; di {
	case "", "false":
	case "true":
		r.integrity = true
	default:
		return nil, invalid(optDataIntegrity, "%q is not \"true\" or \"false\"", di)
	}
	if r.integrity && r.source == sourceEmpty && r.target == targetFS {
		if !isExt(r.fsType) {
			return nil, fmt.Errorf("%w: dataIntegrity with filesystemType %q (only ext2/3/4 are formatted integrity-safely)", ErrUnsupported, r.fsType)
		}
		if err := checkLazyInit(r.mkfsOpts); err != nil {
			return nil, err
		}
	}

	// The mapping name.
	if name, ok := opts[optMapperName]; ok {
		if err := checkMapperName(name); err != nil {
			return nil, err
		}
		r.mapper = name
	} else {
		r.mapper = DefaultMapperName(mountPoint)
	}

	// The key.
	ks, err := parseKey(opts)
	if err != nil {
		return nil, err
	}
	if ks.kind == keyRandom && r.source == sourceEncrypted {
		return nil, invalid(optKey, "missing: sourceType %q needs the key the device was formatted with (a random key only formats an empty device)", sourceEncrypted)
	}
	r.key = ks

	// The flags.
	if err := r.parseFlags(flags); err != nil {
		return nil, err
	}
	return r, nil
}

// DefaultMapperName is the mapping name used when mapperName is not
// given: "guestd-" and 16 hex digits of SHA-256(mountPoint), so a test
// can find the mapping of a mount point.
func DefaultMapperName(mountPoint string) string {
	h := sha256.Sum256([]byte(mountPoint))
	return "guestd-" + hex.EncodeToString(h[:8])
}

// checkMapperName accepts 1 to 100 of [A-Za-z0-9_-] starting with a
// letter or digit, except device-mapper's "control" and cryptsetup's
// temporary names.
func checkMapperName(name string) error {
	switch {
	case name == "":
		return invalid(optMapperName, "empty")
	case len(name) > maxMapperName:
		return invalid(optMapperName, "longer than %d bytes", maxMapperName)
	case !isAlnum(name[0]):
		return invalid(optMapperName, "%q must start with a letter or digit", name)
	case name == "control":
		return invalid(optMapperName, "%q is the device-mapper control node", name)
	case strings.HasPrefix(name, "temporary-cryptsetup-"):
		return invalid(optMapperName, "%q is reserved for cryptsetup", name)
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isAlnum(c) && c != '_' && c != '-' {
			return invalid(optMapperName, "%q has a character outside [A-Za-z0-9_-]", name)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// checkAbsClean accepts an absolute, clean path without NUL that is not
// the root.
func checkAbsClean(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty path")
	case strings.IndexByte(p, 0) >= 0:
		return fmt.Errorf("path %q has a NUL byte", p)
	case !filepath.IsAbs(p):
		return fmt.Errorf("path %q is not absolute", p)
	case filepath.Clean(p) != p:
		return fmt.Errorf("path %q is not clean (want %q)", p, filepath.Clean(p))
	case p == "/":
		return fmt.Errorf("path is the root directory")
	case len(p) >= unix.PathMax:
		return fmt.Errorf("path is longer than %d bytes", unix.PathMax-1)
	}
	return nil
}

func checkMountPoint(mp string) error {
	if err := checkAbsClean(mp); err != nil {
		return fmt.Errorf("%w: mount point: %w", ErrInvalid, err)
	}
	return nil
}

// parseDeviceID parses "MAJ:MIN", both decimal.
func parseDeviceID(id string) (major, minor uint32, err error) {
	a, b, ok := strings.Cut(id, ":")
	if ok {
		major, err = parseDec(a)
		if err == nil {
			minor, err = parseDec(b)
		}
	}
	if !ok || err != nil {
		return 0, 0, invalid(optDeviceID, "%q is not MAJ:MIN (two decimal numbers)", id)
	}
	return major, minor, nil
}

func parseDec(s string) (uint32, error) {
	if s == "" || len(s) > 10 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a decimal number")
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err
}

func supportedFS(t string) bool { return isExt(t) || t == "xfs" }

func isExt(t string) bool { return t == "ext2" || t == "ext3" || t == "ext4" }

// checkLazyInit refuses mkfsOpts that turn lazy inode table or journal
// initialisation on: with dm-integrity and no wipe, blocks mke2fs leaves
// unwritten fail to read later.
func checkLazyInit(opts []string) error {
	for _, e := range extendedOpts(opts) {
		for kv := range strings.SplitSeq(e, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if (k == "lazy_itable_init" || k == "lazy_journal_init") && v != "0" {
				return invalid(optMkfsOpts, "%s=%s cannot be used with dataIntegrity=true (unwritten blocks of a no-wipe dm-integrity device fail to read)", k, v)
			}
		}
	}
	return nil
}

// extendedOpts returns the values of the -E options in mke2fs arguments
// ("-E a,b" and "-Ea,b").
func extendedOpts(opts []string) []string {
	var out []string
	for i := 0; i < len(opts); i++ {
		switch o := opts[i]; {
		case o == "-E" && i+1 < len(opts):
			out = append(out, opts[i+1])
			i++
		case strings.HasPrefix(o, "-E") && len(o) > 2:
			out = append(out, o[2:])
		}
	}
	return out
}

// parseFlags maps mount(8)-style flags to MS_* flags, applied left to
// right as mount(8) does. Without an atime flag the mount gets noatime,
// as upstream mounts. A device target takes only ro, rw and defaults.
func (r *request) parseFlags(flags []string) error {
	var set uintptr
	atime := false
	for _, f := range flags {
		var on, off uintptr
		switch f {
		case "defaults":
		case "ro":
			on = unix.MS_RDONLY
		case "rw":
			off = unix.MS_RDONLY
		case "nosuid":
			on = unix.MS_NOSUID
		case "suid":
			off = unix.MS_NOSUID
		case "nodev":
			on = unix.MS_NODEV
		case "dev":
			off = unix.MS_NODEV
		case "noexec":
			on = unix.MS_NOEXEC
		case "exec":
			off = unix.MS_NOEXEC
		case "sync":
			on = unix.MS_SYNCHRONOUS
		case "async":
			off = unix.MS_SYNCHRONOUS
		case "dirsync":
			on = unix.MS_DIRSYNC
		case "nodiratime":
			on = unix.MS_NODIRATIME
		case "diratime":
			off = unix.MS_NODIRATIME
		case "lazytime":
			on = unix.MS_LAZYTIME
		case "nolazytime":
			off = unix.MS_LAZYTIME
		case "noatime":
			on, off, atime = unix.MS_NOATIME, unix.MS_RELATIME|unix.MS_STRICTATIME, true
		case "relatime":
			on, off, atime = unix.MS_RELATIME, unix.MS_NOATIME|unix.MS_STRICTATIME, true
		case "strictatime":
			on, off, atime = unix.MS_STRICTATIME, unix.MS_NOATIME|unix.MS_RELATIME, true
		default:
			return fmt.Errorf("%w: unknown mount flag %q", ErrInvalid, f)
		}
		if r.target == targetDevice && f != "ro" && f != "rw" && f != "defaults" {
			return fmt.Errorf("%w: mount flag %q has no meaning for targetType %q (only ro, rw)", ErrInvalid, f, targetDevice)
		}
		set = set&^off | on
	}
	if !atime {
		set |= unix.MS_NOATIME
	}
	r.readOnly = set&unix.MS_RDONLY != 0
	if r.target == targetFS {
		r.mountFlags = set
	}
	r.flagNames = flags
	return nil
}

// keyKind is where the key comes from.
type keyKind int

const (
	keyRandom keyKind = iota
	keySealed
	keyKBS
	keyFile
)

// keySpec is a parsed key option. It holds no key material (a sealed
// secret is not the key; it is never logged either).
type keySpec struct {
	kind   keyKind
	sealed string       // keySealed: the whole option
	uri    resource.URI // keyKBS
	path   string       // keyFile
}

// describe names the key source for logs and errors.
func (k keySpec) describe() string {
	switch k.kind {
	case keySealed:
		return "sealed secret"
	case keyKBS:
		return k.uri.String()
	case keyFile:
		return "file://" + k.path
	}
	return "random"
}

// parseKey parses the key option: absent is a random key; "sealed.…",
// kbs:// (or kbs+<plugin>://) and file:///<absolute path> name one. The
// value is echoed in errors only for URIs, never for anything that could
// be a pasted secret.
func parseKey(opts map[string]string) (keySpec, error) {
	v, ok := opts[optKey]
	switch {
	case !ok:
		return keySpec{kind: keyRandom}, nil
	case v == "":
		return keySpec{}, invalid(optKey, "empty (omit it for a random key)")
	case strings.HasPrefix(v, "sealed."):
		return keySpec{kind: keySealed, sealed: v}, nil
	case strings.HasPrefix(v, "kbs://"), strings.HasPrefix(v, "kbs+"):
		u, err := resource.Parse(v)
		if err != nil {
			return keySpec{}, fmt.Errorf("%w: option %q: %w", ErrInvalid, optKey, err)
		}
		return keySpec{kind: keyKBS, uri: u}, nil
	case strings.HasPrefix(v, "file://"):
		p := strings.TrimPrefix(v, "file://")
		if err := checkAbsClean(p); err != nil {
			return keySpec{}, invalid(optKey, "file URI must be file:///<absolute clean path>: %v", err)
		}
		return keySpec{kind: keyFile, path: p}, nil
	}
	return keySpec{}, invalid(optKey, "unsupported scheme (want \"sealed.…\", \"kbs://…\" or \"file:///…\"; the value is not echoed)")
}
