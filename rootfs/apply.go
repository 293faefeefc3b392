package rootfs

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive"
)

// Limits applied by Apply when ApplyOptions leaves them zero, and the fixed
// bound on what may follow the tar end-of-archive marker.
const (
	DefaultMaxBytes   int64 = 64 << 30
	DefaultMaxEntries       = 1 << 20
	MaxTrailingBytes  int64 = 1 << 20
)

// Reasons for refusing a layer. Apply's errors wrap one of them (inside an
// *EntryError) when the refusal is the package's own rule rather than a
// failure of the file system.
var (
	ErrUnsafePath      = errors.New("unsafe path")
	ErrDeviceNode      = errors.New("device node in layer")
	ErrBadWhiteout     = errors.New("invalid whiteout")
	ErrUnsupportedType = errors.New("unsupported tar entry type")
	ErrLimit           = errors.New("layer exceeds limit")
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	paxXattr       = "SCHILY.xattr."
)

// ApplyOptions tunes Apply.
type ApplyOptions struct {
	// Parents are the lower directories of the snapshot, topmost first.
	// Directories the tar implies without listing them take their owner,
	// mode, times and xattrs from the first parent that has them.
	Parents []string
	// MaxBytes caps the total size declared by regular-file entries
	// (whiteout markers included). 0 means DefaultMaxBytes.
	MaxBytes int64
	// MaxEntries caps the number of tar entries. 0 means DefaultMaxEntries.
	MaxEntries int
}

// Stats describes an applied layer.
type Stats struct {
	Entries int   // tar entries read, including skipped ones
	Bytes   int64 // regular-file content read from the stream
}

// EntryError is a tar entry Apply refused or could not apply. Entry is the
// entry's name as containerd's applier sees it: lexically cleaned
// (filepath.Clean), not otherwise rewritten.
type EntryError struct {
	Entry string
	Err   error
}

func (e *EntryError) Error() string { return fmt.Sprintf("tar entry %q: %v", e.Entry, e.Err) }

func (e *EntryError) Unwrap() error { return e.Err }

// Apply applies one uncompressed OCI layer tar stream read from r into dir,
// the upper directory of an overlay snapshot, converting whiteouts to their
// overlay form. See the package documentation for the rules it enforces.
// On success r has been read to its end. On failure dir holds whatever was
// written so far and must be discarded by the caller.
func Apply(ctx context.Context, dir string, r io.Reader, opts ApplyOptions) (Stats, error) {
	a := &applier{maxBytes: opts.MaxBytes, maxEntries: opts.MaxEntries}
	if a.maxBytes == 0 {
		a.maxBytes = DefaultMaxBytes
	}
	if a.maxEntries == 0 {
		a.maxEntries = DefaultMaxEntries
	}
	if a.maxBytes < 0 || a.maxEntries < 0 {
		return Stats{}, fmt.Errorf("apply layer to %s: negative limit (MaxBytes %d, MaxEntries %d)", dir, opts.MaxBytes, opts.MaxEntries)
	}
	root, err := filepath.Abs(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	fi, err := os.Lstat(root)
	if err != nil {
		return Stats{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return Stats{}, fmt.Errorf("apply layer to %s: not a directory", dir)
	}
	a.root = root

	// Hide any Seek method so the tar reader reads (and the caller hashes)
	// every byte instead of seeking over skipped content.
	src := struct{ io.Reader }{r}
	_, err = archive.Apply(ctx, root, src,
		archive.WithConvertWhiteout(archive.OverlayConvertWhiteout),
		archive.WithParents(opts.Parents),
		archive.WithFilter(a.filter),
	)
	if err != nil {
		return a.stats, fmt.Errorf("apply layer to %s: %w", dir, a.attribute(err))
	}

	// The caller digests the stream for the diff_id: read what follows the
	// end-of-archive marker (record padding), within a bound.
	n, err := io.Copy(io.Discard, io.LimitReader(src, MaxTrailingBytes+1))
	if err != nil {
		return a.stats, fmt.Errorf("apply layer to %s: read past end of archive: %w", dir, err)
	}
	if n > MaxTrailingBytes {
		return a.stats, fmt.Errorf("apply layer to %s: %w: more than %d bytes after the end-of-archive marker", dir, ErrLimit, MaxTrailingBytes)
	}
	return a.stats, nil
}

// applier holds the state of one Apply call; its filter runs on every tar
// header before containerd acts on it.
type applier struct {
	root       string
	maxBytes   int64
	maxEntries int
	stats      Stats
	cur        string // entry being processed
}

// attribute names the entry an error from containerd's applier belongs to.
func (a *applier) attribute(err error) error {
	var ee *EntryError
	switch {
	case errors.As(err, &ee):
		return err
	case a.cur == "":
		return fmt.Errorf("read tar: %w", err)
	case errors.Is(err, tar.ErrHeader):
		return fmt.Errorf("read tar header after entry %q: %w", a.cur, err)
	}
	return &EntryError{Entry: a.cur, Err: err}
}

func (a *applier) refuse(reason error, format string, args ...any) error {
	return &EntryError{Entry: a.cur, Err: fmt.Errorf("%w: %s", reason, fmt.Sprintf(format, args...))}
}

// filter enforces the package rules on one header. containerd has already
// cleaned h.Name with filepath.Clean.
func (a *applier) filter(h *tar.Header) (bool, error) {
	a.cur = h.Name
	a.stats.Entries++
	if a.stats.Entries > a.maxEntries {
		return false, a.refuse(ErrLimit, "more than %d entries", a.maxEntries)
	}

	switch h.Typeflag {
	case tar.TypeXGlobalHeader:
		return false, nil
	case tar.TypeChar, tar.TypeBlock:
		return false, a.refuse(ErrDeviceNode, "device %d:%d", h.Devmajor, h.Devminor)
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	default:
		return false, a.refuse(ErrUnsupportedType, "type %q", h.Typeflag)
	}

	rel, ok := inside(h.Name)
	if !ok {
		return false, a.refuse(ErrUnsafePath, "name leaves the layer root")
	}
	if err := a.checkWhiteout(rel); err != nil {
		return false, err
	}
	if err := a.checkParents(rel, "name"); err != nil {
		return false, err
	}

	if h.Typeflag == tar.TypeLink {
		target, ok := inside(path.Clean(h.Linkname))
		switch {
		case !ok:
			return false, a.refuse(ErrUnsafePath, "hard link target %q leaves the layer root", h.Linkname)
		case target == ".":
			return false, a.refuse(ErrUnsafePath, "hard link to the layer root")
		}
		if err := a.checkParents(target, "hard link target"); err != nil {
			return false, err
		}
		// Link what was checked: containerd resolves the raw name, where
		// "l/../x" would follow l before climbing.
		h.Linkname = target
	}

	if h.Typeflag == tar.TypeReg {
		if h.Size > a.maxBytes-a.stats.Bytes {
			return false, a.refuse(ErrLimit, "%d bytes of content would exceed the %d-byte cap (%d already read)", h.Size, a.maxBytes, a.stats.Bytes)
		}
		a.stats.Bytes += h.Size
	}

	// Overlay metadata is the snapshotter's business, never the image's:
	// trusted.* would steer the kernel's overlay, user.overlay.* an overlay
	// mounted with userxattr.
	for k := range h.PAXRecords {
		x, ok := strings.CutPrefix(k, paxXattr)
		if ok && (strings.HasPrefix(x, "trusted.") || strings.HasPrefix(x, "user.overlay.")) {
			delete(h.PAXRecords, k)
		}
	}
	return true, nil
}

// inside turns a cleaned tar path into one relative to the layer root:
// absolute names are taken relative to the root, names that climb out of
// it with ".." are refused.
func inside(name string) (string, bool) {
	rel := strings.TrimLeft(name, "/")
	if rel == "" {
		return ".", true
	}
	if rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return rel, true
}

func (a *applier) checkWhiteout(rel string) error {
	dir, base := path.Split(rel)
	for _, c := range strings.Split(strings.TrimSuffix(dir, "/"), "/") {
		if strings.HasPrefix(c, whiteoutPrefix) {
			return a.refuse(ErrBadWhiteout, "whiteout name %q used as a directory", c)
		}
	}
	if !strings.HasPrefix(base, whiteoutPrefix) {
		return nil
	}
	switch target := strings.TrimPrefix(base, whiteoutPrefix); {
	case base == whiteoutOpaque:
		if dir == "" {
			// overlayfs ignores trusted.overlay.opaque on a layer's root
			// directory, so the marker would silently do nothing.
			return a.refuse(ErrBadWhiteout, "opaque marker on the layer root cannot be expressed in an overlay layer")
		}
	case strings.HasPrefix(base, whiteoutMeta):
		return a.refuse(ErrBadWhiteout, "AUFS metadata entry")
	case target == "" || target == "." || target == "..":
		return a.refuse(ErrBadWhiteout, "whiteout of %q", target)
	}
	return nil
}

// checkParents refuses rel if a directory on its way (not rel itself) is a
// symbolic link already in the layer. No tar writer emits such paths; only
// a crafted archive writes through a link it planted earlier.
func (a *applier) checkParents(rel, what string) error {
	dir := path.Dir(rel)
	if dir == "." {
		return nil
	}
	p := a.root
	for _, c := range strings.Split(dir, "/") {
		p = filepath.Join(p, c)
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return &EntryError{Entry: a.cur, Err: fmt.Errorf("check parents of %s: %w", what, err)}
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			r, _ := filepath.Rel(a.root, p)
			return a.refuse(ErrUnsafePath, "%s goes through symbolic link %q", what, filepath.ToSlash(r))
		}
		if !fi.IsDir() {
			return nil // containerd reports ENOTDIR
		}
	}
	return nil
}
