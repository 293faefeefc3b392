package rootfs

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSandboxDetectsEscapes checks the detector the hostile tests rely on.
func TestSandboxDetectsEscapes(t *testing.T) {
	cases := []struct {
		name   string
		escape func(sb sandbox) error
	}{
		{"overwrite", func(sb sandbox) error {
			return os.WriteFile(filepath.Join(sb.root, "sentinel"), []byte("pwn"), 0o600)
		}},
		{"create beside upper", func(sb sandbox) error {
			return os.WriteFile(filepath.Join(sb.root, "a", "b", "c", "x"), nil, 0o600)
		}},
		{"hard link", func(sb sandbox) error {
			return os.Link(filepath.Join(sb.root, "etc", "passwd"), filepath.Join(sb.upper, "h"))
		}},
		{"xattr", func(sb sandbox) error {
			return unix.Setxattr(sb.root, "trusted.overlay.opaque", []byte("y"), 0)
		}},
		{"whiteout", func(sb sandbox) error {
			return unix.Mknod(filepath.Join(sb.root, "x"), unix.S_IFCHR, 0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			before := sb.state(t)
			must(t, tc.escape(sb))
			if len(sb.changes(t, before)) == 0 {
				t.Fatal("escape not detected")
			}
		})
	}
}

// capV2 is a VFS_CAP_REVISION_2 security.capability value granting
// CAP_NET_BIND_SERVICE, effective.
func capV2() string {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x02000000|0x1)
	binary.LittleEndian.PutUint32(b[4:], 1<<unix.CAP_NET_BIND_SERVICE)
	return string(b)
}

func TestApplyKeepsMetadata(t *testing.T) {
	t1 := time.Unix(1_500_000_000, 0)
	t2 := time.Unix(1_400_000_000, 0)
	t3 := time.Unix(1_300_000_000, 0)
	tn := time.Unix(1_200_000_000, 123456789)
	owner := func(uid, gid int) func(h *tar.Header) {
		return func(h *tar.Header) { h.Uid, h.Gid = uid, gid }
	}
	mode := func(m int64) func(h *tar.Header) { return func(h *tar.Header) { h.Mode = m } }
	mtime := func(tm time.Time) func(h *tar.Header) {
		return func(h *tar.Header) { h.ModTime, h.Format = tm, tar.FormatPAX }
	}
	layer := mkTar(t,
		dir("d/").mod(mode(0o750)).mod(owner(1000, 2000)).mod(mtime(t1)),
		reg("d/suid", "#!/bin/true\n").mod(mode(0o4755)),
		reg("d/sgid", "x").mod(mode(0o2711)),
		dir("tmp/").mod(mode(0o1777)),
		reg("d/owned", "o").mod(mode(0o640)).mod(owner(1234, 5678)).mod(mtime(t2)),
		sym("d/link", "suid").mod(owner(42, 43)).mod(mtime(t3)),
		hard("d/hard", "d/suid").mod(mode(0o4755)), // writers repeat the inode metadata
		fifo("d/fifo").mod(owner(7, 8)),
		reg("d/caps", "bin").mod(mode(0o755)).mod(xattrs("user.test", "hello", "security.capability", capV2())),
		dir("d/xd/").mod(xattrs("user.dirattr", "1")),
		reg("nanos", "n").mod(mtime(tn)),
		reg("empty", ""),
	)
	upper := t.TempDir()
	st, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if want := (Stats{Entries: 12, Bytes: int64(len("#!/bin/true\n") + len("x") + len("o") + len("bin") + len("n"))}); st != want {
		t.Errorf("Stats = %+v, want %+v", st, want)
	}

	cases := []struct {
		path     string
		mode     fs.FileMode
		uid, gid uint32
		mtime    time.Time
	}{
		{"d", fs.ModeDir | 0o750, 1000, 2000, t1},
		{"d/suid", fs.ModeSetuid | 0o755, 0, 0, testTime},
		{"d/sgid", fs.ModeSetgid | 0o711, 0, 0, testTime},
		{"tmp", fs.ModeDir | fs.ModeSticky | 0o777, 0, 0, testTime},
		{"d/owned", 0o640, 1234, 5678, t2},
		{"d/link", fs.ModeSymlink | 0o777, 42, 43, t3},
		{"d/hard", fs.ModeSetuid | 0o755, 0, 0, testTime},
		{"d/fifo", fs.ModeNamedPipe | 0o620, 7, 8, testTime},
		{"d/caps", 0o755, 0, 0, testTime},
		{"d/xd", fs.ModeDir | 0o755, 0, 0, testTime},
		{"nanos", 0o644, 0, 0, tn},
		{"empty", 0o644, 0, 0, testTime},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			p := filepath.Join(upper, c.path)
			fi, err := os.Lstat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode() != c.mode {
				t.Errorf("mode %v, want %v", fi.Mode(), c.mode)
			}
			s := fi.Sys().(*syscall.Stat_t)
			if s.Uid != c.uid || s.Gid != c.gid {
				t.Errorf("owner %d:%d, want %d:%d", s.Uid, s.Gid, c.uid, c.gid)
			}
			if !fi.ModTime().Equal(c.mtime) {
				t.Errorf("mtime %v, want %v", fi.ModTime(), c.mtime)
			}
		})
	}

	if l, err := os.Readlink(filepath.Join(upper, "d/link")); err != nil || l != "suid" {
		t.Errorf("d/link -> %q, %v; want suid", l, err)
	}
	a, _ := os.Lstat(filepath.Join(upper, "d/suid"))
	b, _ := os.Lstat(filepath.Join(upper, "d/hard"))
	if !os.SameFile(a, b) || a.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Error("d/hard is not a hard link to d/suid")
	}
	for _, x := range []struct{ path, key, want string }{
		{"d/caps", "user.test", "hello"},
		{"d/caps", "security.capability", capV2()},
		{"d/xd", "user.dirattr", "1"},
	} {
		if got, err := getxattr(filepath.Join(upper, x.path), x.key); err != nil || got != x.want {
			t.Errorf("%s xattr %s = %q, %v; want %q", x.path, x.key, got, err, x.want)
		}
	}
}

// TestApplyParents checks that directories the tar only implies take
// their attributes from the topmost lower layer that has them.
func TestApplyParents(t *testing.T) {
	lower1, lower2, upper := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []struct {
		root, path string
		mode       os.FileMode
		uid        int
		xattr      string
	}{
		{lower1, "usr", 0o711, 42, "lower1"},
		{lower1, "opt", 0o700, 1, "lower1"},
		{lower2, "opt", 0o750, 2, "lower2"},
	} {
		p := filepath.Join(d.root, d.path)
		must(t, os.Mkdir(p, d.mode))
		must(t, os.Chmod(p, d.mode))
		must(t, os.Lchown(p, d.uid, d.uid+1))
		must(t, unix.Lsetxattr(p, "user.from", []byte(d.xattr), 0))
	}
	layer := mkTar(t, reg("usr/bin/x", "x"), reg("opt/y", "y"))
	if _, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{Parents: []string{lower2, lower1}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, c := range []struct {
		path     string
		mode     os.FileMode
		uid, gid uint32
		from     string
	}{
		{"usr", fs.ModeDir | 0o711, 42, 43, "lower1"},
		{"opt", fs.ModeDir | 0o750, 2, 3, "lower2"},
		{"usr/bin", fs.ModeDir | 0o755, 0, 0, ""},
	} {
		p := filepath.Join(upper, c.path)
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		s := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != c.mode || s.Uid != c.uid || s.Gid != c.gid {
			t.Errorf("%s: %v %d:%d, want %v %d:%d", c.path, fi.Mode(), s.Uid, s.Gid, c.mode, c.uid, c.gid)
		}
		got, _ := getxattr(p, "user.from")
		if got != c.from {
			t.Errorf("%s: user.from = %q, want %q", c.path, got, c.from)
		}
	}
}

// TestApplyOverlay mounts the applied layer over a lower directory and
// checks that the whiteouts and the opaque directory hide what they should.
func TestApplyOverlay(t *testing.T) {
	base := t.TempDir()
	lower, upper, work, merged := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "merged")
	for _, d := range []string{upper, work, merged, filepath.Join(lower, "opq", "sub"), filepath.Join(lower, "dir")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	for _, f := range []string{"keep", "gone", "opq/old", "opq/sub/deep", "dir/keep2", "dir/gone2"} {
		must(t, os.WriteFile(filepath.Join(lower, f), []byte("lower "+f), 0o644))
	}
	layer := mkTar(t,
		reg(".wh.gone", ""),
		dir("opq/"),
		reg("opq/.wh..wh..opq", ""),
		reg("opq/new", "new"),
		reg("dir/.wh.gone2", "").mod(func(h *tar.Header) { h.Uid, h.Gid = 5, 6 }),
		reg("added", "added"),
	)
	if _, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{Parents: []string{lower}}); err != nil {
		t.Fatalf("Apply: %v", err)
	}

	// The upper directory holds overlay's native forms, no .wh. names.
	for _, w := range []string{"gone", "dir/gone2"} {
		st := lstat(t, filepath.Join(upper, w))
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
			t.Errorf("upper/%s: mode %o rdev %d, want a 0/0 character device", w, st.Mode, st.Rdev)
		}
	}
	if st := lstat(t, filepath.Join(upper, "dir/gone2")); st.Uid != 5 || st.Gid != 6 {
		t.Errorf("whiteout owner %d:%d, want 5:6", st.Uid, st.Gid)
	}
	if v, err := getxattr(filepath.Join(upper, "opq"), "trusted.overlay.opaque"); err != nil || v != "y" {
		t.Errorf("upper/opq trusted.overlay.opaque = %q, %v; want y", v, err)
	}
	must(t, filepath.WalkDir(upper, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(d.Name(), whiteoutPrefix) {
			t.Errorf("upper holds %s", p)
		}
		return err
	}))

	mounts := []struct{ name, opts string }{
		{"upper", fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)},
		{"two lowers", fmt.Sprintf("lowerdir=%s:%s", upper, lower)},
	}
	for _, m := range mounts {
		t.Run(m.name, func(t *testing.T) {
			if err := unix.Mount("overlay", merged, "overlay", 0, m.opts); err != nil {
				t.Fatalf("mount overlay %s: %v", m.opts, err)
			}
			defer func() { must(t, unix.Unmount(merged, 0)) }()
			for f, want := range map[string]string{
				"keep": "lower keep", "added": "added", "opq/new": "new", "dir/keep2": "lower dir/keep2",
			} {
				if b, err := os.ReadFile(filepath.Join(merged, f)); err != nil || string(b) != want {
					t.Errorf("merged %s = %q, %v; want %q", f, b, err, want)
				}
			}
			for _, f := range []string{"gone", "dir/gone2", "opq/old", "opq/sub", "opq/sub/deep"} {
				if exists(filepath.Join(merged, f)) {
					t.Errorf("merged %s is visible, want it hidden", f)
				}
			}
			names, err := os.ReadDir(filepath.Join(merged, "opq"))
			if err != nil || len(names) != 1 || names[0].Name() != "new" {
				t.Errorf("merged opq lists %v, %v; want only new", names, err)
			}
		})
	}
}

func TestApplyLimits(t *testing.T) {
	many := func(n int) []byte {
		var es []ent
		for i := range n {
			es = append(es, reg(fmt.Sprintf("f%05d", i), ""))
		}
		return mkTar(t, es...)
	}
	// header of a file claiming 1 TiB, followed by endless zeros
	var huge bytes.Buffer
	tw := tar.NewWriter(&huge)
	must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "huge", Mode: 0o644, Size: 1 << 40}))

	cases := []struct {
		name      string
		src       io.Reader
		opts      ApplyOptions
		entry     string
		maxRead   int64
		maxOnDisk int
	}{
		{"entries", bytes.NewReader(many(5000)), ApplyOptions{MaxEntries: 100}, "f00100", 101 * 512, 100},
		{"claimed size over the default cap", io.MultiReader(bytes.NewReader(huge.Bytes()), zeros{}), ApplyOptions{}, "huge", 4096, 0},
		{"claimed size over a small cap", io.MultiReader(bytes.NewReader(huge.Bytes()), zeros{}), ApplyOptions{MaxBytes: 1 << 20}, "huge", 4096, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			upper := t.TempDir()
			src := &countingReader{r: tc.src}
			_, err := Apply(context.Background(), upper, src, tc.opts)
			var ee *EntryError
			if !errors.Is(err, ErrLimit) || !errors.As(err, &ee) || ee.Entry != tc.entry {
				t.Fatalf("Apply: %v; want ErrLimit on entry %q", err, tc.entry)
			}
			if src.n > tc.maxRead {
				t.Errorf("read %d bytes, want at most %d", src.n, tc.maxRead)
			}
			names, _ := os.ReadDir(upper)
			if len(names) > tc.maxOnDisk {
				t.Errorf("%d files written, want at most %d", len(names), tc.maxOnDisk)
			}
		})
	}
}

func TestApplyBadOptions(t *testing.T) {
	for _, o := range []ApplyOptions{{MaxBytes: -1}, {MaxEntries: -1}} {
		if _, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(mkTar(t)), o); err == nil {
			t.Errorf("Apply with %+v succeeded", o)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	must(t, os.WriteFile(f, nil, 0o644))
	if _, err := Apply(context.Background(), f, bytes.NewReader(mkTar(t)), ApplyOptions{}); err == nil {
		t.Error("Apply into a regular file succeeded")
	}
}

// diskUsage sums the allocated size of every file under dir.
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			n += lstat(t, p).Blocks * 512
		}
		return nil
	}))
	return n
}

// TestApplyBomb feeds a gzip'd layer of zeros (32 MiB that compress to
// a few KiB) through a 1 MiB cap: Apply must stop reading at the cap and
// leave at most the cap on disk.
func TestApplyBomb(t *testing.T) {
	const (
		files    = 64
		fileSize = 512 << 10
		capBytes = 1 << 20
	)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	for i := range files {
		must(t, tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("zero%02d", i), Mode: 0o644, Size: fileSize}))
		_, err := io.CopyN(tw, zeros{}, fileSize)
		must(t, err)
	}
	must(t, tw.Close())
	must(t, zw.Close())
	if gz.Len() > 256<<10 {
		t.Fatalf("bomb is %d bytes compressed; want a small one", gz.Len())
	}

	zr, err := gzip.NewReader(bytes.NewReader(gz.Bytes()))
	must(t, err)
	src := &countingReader{r: zr}
	upper := t.TempDir()
	st, err := Apply(context.Background(), upper, src, ApplyOptions{MaxBytes: capBytes})
	var ee *EntryError
	if !errors.Is(err, ErrLimit) || !errors.As(err, &ee) || ee.Entry != "zero02" {
		t.Fatalf("Apply: %v; want ErrLimit on zero02", err)
	}
	if st.Bytes != capBytes || st.Entries != 3 {
		t.Errorf("Stats = %+v, want 3 entries and %d bytes", st, capBytes)
	}
	if max := int64(capBytes + 8*512); src.n > max {
		t.Errorf("read %d uncompressed bytes, want at most %d of %d", src.n, max, files*fileSize)
	}
	if du := diskUsage(t, upper); du > capBytes {
		t.Errorf("%d bytes on disk, want at most %d", du, capBytes)
	}
}

// sparseLayer is a PAX 1.0 sparse file: the map "one 512-byte data region
// at offset 0" and 512 bytes of 'A', in a file whose logical size is
// realSize.
func sparseLayer(realSize int64) []byte {
	var b []byte
	b = append(b, paxHeader(
		"GNU.sparse.major", "1",
		"GNU.sparse.minor", "0",
		"GNU.sparse.name", "big",
		"GNU.sparse.realsize", fmt.Sprint(realSize),
	)...)
	b = append(b, ustarBlock("GNUSparseFile.0/big", tar.TypeReg, 1024, false)...)
	b = append(b, pad([]byte("1\n0\n512\n"))...)
	b = append(b, bytes.Repeat([]byte("A"), 512)...)
	return append(b, make([]byte, 1024)...)
}

func TestApplySparse(t *testing.T) {
	t.Run("huge claim", func(t *testing.T) {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(sparseLayer(1<<50)), ApplyOptions{})
		runtime.ReadMemStats(&after)
		var ee *EntryError
		if !errors.Is(err, ErrLimit) || !errors.As(err, &ee) || ee.Entry != "big" {
			t.Fatalf("Apply: %v; want ErrLimit on big", err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 32<<20 {
			t.Errorf("allocated %d bytes for a 1 PiB claim", alloc)
		}
	})
	t.Run("over a small cap", func(t *testing.T) {
		upper := t.TempDir()
		_, err := Apply(context.Background(), upper, bytes.NewReader(sparseLayer(10<<20)), ApplyOptions{MaxBytes: 1 << 20})
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("Apply: %v; want ErrLimit", err)
		}
		if du := diskUsage(t, upper); du != 0 {
			t.Errorf("%d bytes on disk, want none", du)
		}
	})
	t.Run("within the cap", func(t *testing.T) {
		upper := t.TempDir()
		st, err := Apply(context.Background(), upper, bytes.NewReader(sparseLayer(64<<10)), ApplyOptions{MaxBytes: 1 << 20})
		if err != nil {
			t.Fatalf("Apply: %v", err)
		}
		b, err := os.ReadFile(filepath.Join(upper, "big"))
		must(t, err)
		want := append(bytes.Repeat([]byte("A"), 512), make([]byte, 64<<10-512)...)
		if !bytes.Equal(b, want) || st.Bytes != 64<<10 {
			t.Errorf("big: %d bytes (Stats %+v), want 512 A then zeros up to 64 KiB", len(b), st)
		}
	})
}

// TestApplyDrains checks that Apply reads the stream to its end, so a
// digest of it covers the padding after the end-of-archive marker, and
// that skipped content (a whiteout's body) is read, not seeked over.
func TestApplyDrains(t *testing.T) {
	layer := mkTar(t, reg("f", "data"), reg(".wh.old", strings.Repeat("w", 3000)))
	cases := []struct {
		name    string
		trailer []byte
		wantErr bool
	}{
		{"no padding", nil, false},
		{"record padding", make([]byte, 10240-len(layer)%10240), false},
		{"trailing junk at the bound", bytes.Repeat([]byte("j"), int(MaxTrailingBytes)), false},
		{"trailing junk over the bound", make([]byte, MaxTrailingBytes+1), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			full := append(append([]byte(nil), layer...), tc.trailer...)
			h := sha256.New()
			r := bytes.NewReader(full) // a Seeker: Apply must not use it
			_, err := Apply(context.Background(), t.TempDir(), io.TeeReader(r, h), ApplyOptions{})
			if tc.wantErr {
				if !errors.Is(err, ErrLimit) {
					t.Fatalf("Apply: %v; want ErrLimit", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if r.Len() != 0 {
				t.Errorf("%d bytes left unread", r.Len())
			}
			if got, want := h.Sum(nil), sha256.Sum256(full); !bytes.Equal(got, want[:]) {
				t.Error("digest of what Apply read differs from the stream's")
			}
		})
	}

	// A bare Seeker must be read, not skipped, too.
	src := &seekCounter{Reader: bytes.NewReader(layer)}
	if _, err := Apply(context.Background(), t.TempDir(), src, ApplyOptions{}); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if src.seeks != 0 || src.Len() != 0 {
		t.Errorf("Apply seeked %d times and left %d bytes", src.seeks, src.Len())
	}
}

type seekCounter struct {
	*bytes.Reader
	seeks int
}

func (s *seekCounter) Seek(off int64, whence int) (int64, error) {
	s.seeks++
	return s.Reader.Seek(off, whence)
}

func TestApplyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Apply(ctx, t.TempDir(), bytes.NewReader(mkTar(t, reg("f", "x"))), ApplyOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Apply: %v; want context.Canceled", err)
	}
}

func TestApplyHardLinks(t *testing.T) {
	t.Run("to a file of a lower layer only", func(t *testing.T) {
		lower, upper := t.TempDir(), t.TempDir()
		must(t, os.Mkdir(filepath.Join(lower, "bin"), 0o755))
		must(t, os.WriteFile(filepath.Join(lower, "bin", "a"), []byte("a"), 0o755))
		layer := mkTar(t, hard("bin/b", "bin/a"))
		_, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{Parents: []string{lower}})
		var ee *EntryError
		if !errors.As(err, &ee) || ee.Entry != "bin/b" || !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Apply: %v; want a not-exist error naming bin/b", err)
		}
	})
	t.Run("entry metadata applies to the shared inode", func(t *testing.T) {
		upper := t.TempDir()
		layer := mkTar(t,
			reg("a", "x").mod(func(h *tar.Header) { h.Mode = 0o600 }),
			hard("b", "a").mod(func(h *tar.Header) { h.Mode, h.Uid = 0o4755, 9 }),
		)
		if _, err := Apply(context.Background(), upper, bytes.NewReader(layer), ApplyOptions{}); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		fi, err := os.Lstat(filepath.Join(upper, "a"))
		must(t, err)
		if fi.Mode() != fs.ModeSetuid|0o755 || fi.Sys().(*syscall.Stat_t).Uid != 9 {
			t.Errorf("a: %v uid %d, want the link entry's -rwsr-xr-x uid 9", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid)
		}
	})
}

func TestApplyCorruptHeader(t *testing.T) {
	layer := mkTar(t, reg("f", "x"))
	junk := bytes.Repeat([]byte{0xff}, 512)
	corrupt := append(layer[:1024:1024], junk...) // header + data of f, then junk
	_, err := Apply(context.Background(), t.TempDir(), bytes.NewReader(corrupt), ApplyOptions{})
	if !errors.Is(err, tar.ErrHeader) || !strings.Contains(err.Error(), `after entry "f"`) {
		t.Fatalf("Apply: %v; want tar.ErrHeader after entry f", err)
	}
}
