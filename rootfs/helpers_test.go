package rootfs

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var testTime = time.Unix(1_600_000_000, 0)

// ent is one tar entry of a test layer.
type ent struct {
	hdr  tar.Header
	body string
}

func (e ent) mod(f func(h *tar.Header)) ent {
	f(&e.hdr)
	return e
}

func reg(name, body string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(body)), ModTime: testTime}, body: body}
}

func dir(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: testTime}}
}

func sym(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: testTime}}
}

func hard(name, target string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: testTime}}
}

func fifo(name string) ent {
	return ent{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o620, ModTime: testTime}}
}

func dev(typ byte, name string, major, minor int64) ent {
	return ent{hdr: tar.Header{Typeflag: typ, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor, ModTime: testTime}}
}

func xattrs(kv ...string) func(h *tar.Header) {
	return func(h *tar.Header) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h.PAXRecords["SCHILY.xattr."+kv[i]] = kv[i+1]
		}
	}
}

func mkTar(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := e.hdr
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("write tar header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatalf("write tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// ustarBlock is a raw 512-byte tar header, for formats archive/tar does not
// write. gnu selects the GNU magic instead of POSIX ustar.
func ustarBlock(name string, typ byte, size int64, gnu bool) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	copy(b[100:108], "0000644\x00")
	copy(b[108:116], "0000000\x00")
	copy(b[116:124], "0000000\x00")
	copy(b[124:136], fmt.Sprintf("%011o\x00", size))
	copy(b[136:148], fmt.Sprintf("%011o\x00", testTime.Unix()))
	b[156] = typ
	if gnu {
		copy(b[257:265], "ustar  \x00")
	} else {
		copy(b[257:265], "ustar\x0000")
	}
	finishBlock(b)
	return b
}

func finishBlock(b []byte) {
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func pad(b []byte) []byte {
	if n := len(b) % 512; n != 0 {
		b = append(b, make([]byte, 512-n)...)
	}
	return b
}

// paxHeader is a local PAX extended header ('x') carrying records in order.
func paxHeader(kv ...string) []byte {
	var data []byte
	for i := 0; i+1 < len(kv); i += 2 {
		rec := " " + kv[i] + "=" + kv[i+1] + "\n"
		n := 0
		for d := 1; n == 0; d++ {
			if len(fmt.Sprint(len(rec)+d)) == d {
				n = len(rec) + d
			}
		}
		data = append(data, fmt.Sprintf("%d%s", n, rec)...)
	}
	return append(ustarBlock("PaxHeaders/x", tar.TypeXHeader, int64(len(data)), false), pad(data)...)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// zeros is an endless stream of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sandbox is a directory holding the layer's upper directory four levels
// down, plus sentinel files an escaping entry would reach or replace.
type sandbox struct {
	root  string // the sentinel parent
	upper string // root/a/b/c/upper
}

func newSandbox(t *testing.T) sandbox {
	t.Helper()
	root := t.TempDir()
	sb := sandbox{root: root, upper: filepath.Join(root, "a", "b", "c", "upper")}
	must(t, os.MkdirAll(sb.upper, 0o755))
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc", "passwd"), []byte("host:x:0:0::/:/bin/sh\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "sentinel"), []byte("do not touch"), 0o600))
	must(t, os.WriteFile(filepath.Join(root, "a", "b", "c", "outside"), []byte("beside the upper dir"), 0o600))
	return sb
}

// state describes every file of the sandbox outside the upper directory:
// type, mode, owner, size, link count, times, xattrs and content.
func (sb sandbox) state(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(sb.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == sb.upper {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		desc := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d nlink=%d rdev=%d mtime=%d.%d",
			st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec)
		desc += " xattrs=" + listXattrs(t, p)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			desc += " sha256=" + hex.EncodeToString(sum[:])
		case unix.S_IFLNK:
			l, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " link=" + l
		}
		out[p] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walk sandbox: %v", err)
	}
	return out
}

func listXattrs(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return ""
		}
		t.Fatalf("list xattrs of %s: %v", p, err)
	}
	var names []string
	for _, k := range strings.Split(string(buf[:n]), "\x00") {
		if k == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, k, v)
		if err != nil {
			t.Fatalf("get xattr %s of %s: %v", k, p, err)
		}
		names = append(names, k+"="+hex.EncodeToString(v[:m]))
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}

// changes lists how the sandbox outside the upper dir differs from before.
func (sb sandbox) changes(t *testing.T, before map[string]string) []string {
	t.Helper()
	var out []string
	after := sb.state(t)
	for p, d := range after {
		if b, ok := before[p]; !ok {
			out = append(out, fmt.Sprintf("created outside the upper dir: %s (%s)", p, d))
		} else if b != d {
			out = append(out, fmt.Sprintf("changed outside the upper dir: %s\n before %s\n after  %s", p, b, d))
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			out = append(out, "removed outside the upper dir: "+p)
		}
	}
	sort.Strings(out)
	return out
}

func (sb sandbox) assertUnchanged(t *testing.T, before map[string]string) {
	t.Helper()
	for _, c := range sb.changes(t, before) {
		t.Error(c)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func lstat(t *testing.T, p string) *syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return &st
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func getxattr(p, key string) (string, error) {
	buf := make([]byte, 64<<10)
	n, err := unix.Lgetxattr(p, key, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}
