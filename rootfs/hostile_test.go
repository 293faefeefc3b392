package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/containerd/v2/pkg/archive"
)

// hostile is a crafted layer and what must come of it: with Apply, and with
// containerd's archive.Apply alone (the baseline our filter builds on).
type hostile struct {
	name  string
	layer func(t *testing.T, sb sandbox) []byte

	refuse error                          // Apply refuses the entry for this reason
	fails  bool                           // Apply fails on the entry with a file-system error
	entry  string                         // the entry named by the error; $SB is the sandbox root
	check  func(t *testing.T, sb sandbox) // after a successful Apply

	ctrdFails bool                           // archive.Apply alone returns an error
	ctrdCheck func(t *testing.T, sb sandbox) // after a successful archive.Apply
}

func ents(es ...ent) func(t *testing.T, sb sandbox) []byte {
	return func(t *testing.T, _ sandbox) []byte { return mkTar(t, es...) }
}

func inUpper(sb sandbox, rel string) string { return filepath.Join(sb.upper, rel) }

func fileIs(rel, content string) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		b, err := os.ReadFile(inUpper(sb, rel))
		if err != nil || string(b) != content {
			t.Errorf("%s: got %q, %v; want %q", rel, b, err, content)
		}
	}
}

func symlinkIs(rel, target string) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		l, err := os.Readlink(inUpper(sb, rel))
		if err != nil || l != target {
			t.Errorf("%s: symlink to %q, %v; want %q", rel, l, err, target)
		}
	}
}

func isWhiteout(rel string) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		st := lstat(t, inUpper(sb, rel))
		if st.Mode&syscall.S_IFMT != syscall.S_IFCHR || st.Rdev != 0 {
			t.Errorf("%s: mode %o rdev %d, want a 0/0 character device", rel, st.Mode, st.Rdev)
		}
	}
}

func isDevice(rel string, typ uint32) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		if st := lstat(t, inUpper(sb, rel)); st.Mode&syscall.S_IFMT != typ {
			t.Errorf("%s: mode %o, want type %o", rel, st.Mode, typ)
		}
	}
}

func xattrIs(rel, key, want string) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		got, err := getxattr(inUpper(sb, rel), key)
		if want == "" {
			if err == nil {
				t.Errorf("%s: xattr %s = %q, want none", rel, key, got)
			}
			return
		}
		if err != nil || got != want {
			t.Errorf("%s: xattr %s = %q, %v; want %q", rel, key, got, err, want)
		}
	}
}

func sameFile(a, b string) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		fa, err1 := os.Lstat(inUpper(sb, a))
		fb, err2 := os.Lstat(inUpper(sb, b))
		if err1 != nil || err2 != nil || !os.SameFile(fa, fb) {
			t.Errorf("%s and %s are not the same file (%v, %v)", a, b, err1, err2)
		}
	}
}

func all(checks ...func(t *testing.T, sb sandbox)) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) {
		t.Helper()
		for _, c := range checks {
			c(t, sb)
		}
	}
}

// at builds a check on a path that depends on the sandbox location.
func at(f func(sb sandbox) func(t *testing.T, sb sandbox)) func(t *testing.T, sb sandbox) {
	return func(t *testing.T, sb sandbox) { t.Helper(); f(sb)(t, sb) }
}

func hostileCases() []hostile {
	return []hostile{
		{
			name: "dotdot name", layer: ents(reg("../escaped", "x")),
			refuse: ErrUnsafePath, entry: "../escaped",
			ctrdCheck: fileIs("escaped", "x"),
		},
		{
			name: "dotdot to sentinel", layer: ents(reg("../../../../sentinel", "pwn")),
			refuse: ErrUnsafePath, entry: "../../../../sentinel",
			ctrdCheck: fileIs("sentinel", "pwn"),
		},
		{
			name: "dotdot after cleaning", layer: ents(reg("a/../../escaped", "x")),
			refuse: ErrUnsafePath, entry: "../escaped",
			ctrdCheck: fileIs("escaped", "x"),
		},
		{
			name: "absolute name",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, reg(sb.root+"/sentinel", "pwn"))
			},
			check: at(func(sb sandbox) func(*testing.T, sandbox) {
				return fileIs(sb.root+"/sentinel", "pwn")
			}),
			ctrdCheck: at(func(sb sandbox) func(*testing.T, sandbox) {
				return fileIs(sb.root+"/sentinel", "pwn")
			}),
		},
		{
			name: "write through symlink to /",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, sym("l", "/"), reg("l"+sb.root+"/sentinel", "pwn"))
			},
			refuse: ErrUnsafePath, entry: "l$SB/sentinel",
			ctrdCheck: at(func(sb sandbox) func(*testing.T, sandbox) {
				return all(symlinkIs("l", "/"), fileIs(sb.root+"/sentinel", "pwn"))
			}),
		},
		{
			name: "write through absolute symlink",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, sym("l", sb.root), reg("l/sentinel", "pwn"))
			},
			refuse: ErrUnsafePath, entry: "l/sentinel",
			ctrdCheck: at(func(sb sandbox) func(*testing.T, sandbox) {
				return fileIs(sb.root+"/sentinel", "pwn")
			}),
		},
		{
			name:   "write through relative symlink climbing out",
			layer:  ents(sym("l", "../../../.."), reg("l/sentinel", "pwn")),
			refuse: ErrUnsafePath, entry: "l/sentinel",
			ctrdCheck: fileIs("sentinel", "pwn"),
		},
		{
			name:   "directory implied through symlink",
			layer:  ents(sym("l", "../../../.."), reg("l/etc/passwd", "pwn")),
			refuse: ErrUnsafePath, entry: "l/etc/passwd",
			ctrdCheck: fileIs("etc/passwd", "pwn"),
		},
		{
			name:      "symlink replaced by directory",
			layer:     ents(sym("l", "/"), dir("l/"), reg("l/x", "ok")),
			check:     fileIs("l/x", "ok"),
			ctrdCheck: fileIs("l/x", "ok"),
		},
		{
			name:      "absolute hard link resolved in the layer",
			layer:     ents(reg("etc/passwd", "container"), hard("h", "/etc/passwd")),
			check:     all(fileIs("h", "container"), sameFile("h", "etc/passwd")),
			ctrdCheck: sameFile("h", "etc/passwd"),
		},
		{
			name: "absolute hard link to a host file",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, hard("h", sb.root+"/etc/passwd"))
			},
			fails: true, entry: "h",
			ctrdFails: true,
		},
		{
			name:   "hard link climbing out",
			layer:  ents(hard("h", "../outside")),
			refuse: ErrUnsafePath, entry: "h",
			ctrdFails: true,
		},
		{
			name:   "hard link climbing out to a name the layer has",
			layer:  ents(reg("etc/passwd", "container"), hard("h", "../../../../etc/passwd")),
			refuse: ErrUnsafePath, entry: "h",
			ctrdCheck: sameFile("h", "etc/passwd"),
		},
		{
			name: "hard link through symlinked directory",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, sym("l", sb.root+"/etc"), hard("h", "l/passwd"))
			},
			refuse: ErrUnsafePath, entry: "h",
			ctrdFails: true,
		},
		{
			name:   "hard link through symlinked directory to a name the layer has",
			layer:  ents(reg("etc/passwd", "container"), sym("l", "/etc"), hard("h", "l/passwd")),
			refuse: ErrUnsafePath, entry: "h",
			ctrdCheck: sameFile("h", "etc/passwd"),
		},
		{
			name: "hard link to a symlink pointing out",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, sym("s", sb.root+"/etc/passwd"), hard("h", "s"))
			},
			check: at(func(sb sandbox) func(*testing.T, sandbox) {
				return all(symlinkIs("h", sb.root+"/etc/passwd"), sameFile("h", "s"))
			}),
			ctrdCheck: at(func(sb sandbox) func(*testing.T, sandbox) {
				return symlinkIs("h", sb.root+"/etc/passwd")
			}),
		},
		{
			name: "hard link target with dotdot after a symlink",
			layer: ents(reg("b", "top"), dir("x/y/"), reg("x/b", "deep"), sym("a", "x/y"),
				hard("h", "a/../b")),
			check:     all(sameFile("h", "b"), fileIs("h", "top")),
			ctrdCheck: sameFile("h", "x/b"),
		},
		{
			name:   "hard link to the root",
			layer:  ents(hard("h", "/")),
			refuse: ErrUnsafePath, entry: "h",
			ctrdFails: true,
		},
		{
			name:   "whiteout of dotdot",
			layer:  ents(reg(".wh...", "")),
			refuse: ErrBadWhiteout, entry: ".wh...",
			ctrdFails: true,
		},
		{
			name:   "nested whiteout of dotdot",
			layer:  ents(dir("d/"), reg("d/.wh...", "")),
			refuse: ErrBadWhiteout, entry: "d/.wh...",
			ctrdFails: true,
		},
		{
			name:   "whiteout of dot",
			layer:  ents(reg(".wh..", "")),
			refuse: ErrBadWhiteout, entry: ".wh..",
			ctrdFails: true,
		},
		{
			name:   "whiteout of nothing",
			layer:  ents(reg(".wh.", "")),
			refuse: ErrBadWhiteout, entry: ".wh.",
			ctrdFails: true,
		},
		{
			name:   "whiteout above the root",
			layer:  ents(reg("../.wh.sentinel", "")),
			refuse: ErrUnsafePath, entry: "../.wh.sentinel",
			ctrdCheck: isWhiteout("sentinel"),
		},
		{
			name: "whiteout through symlink",
			layer: func(t *testing.T, sb sandbox) []byte {
				return mkTar(t, sym("l", sb.root), reg("l/.wh.sentinel", ""))
			},
			refuse: ErrUnsafePath, entry: "l/.wh.sentinel",
			ctrdCheck: at(func(sb sandbox) func(*testing.T, sandbox) {
				return isWhiteout(sb.root + "/sentinel")
			}),
		},
		{
			name:   "opaque marker on the root",
			layer:  ents(reg(".wh..wh..opq", "")),
			refuse: ErrBadWhiteout, entry: ".wh..wh..opq",
			ctrdCheck: xattrIs(".", "trusted.overlay.opaque", "y"),
		},
		{
			name:   "opaque marker through symlink",
			layer:  ents(sym("l", "../../../.."), reg("l/.wh..wh..opq", "")),
			refuse: ErrUnsafePath, entry: "l/.wh..wh..opq",
			ctrdCheck: xattrIs(".", "trusted.overlay.opaque", "y"),
		},
		{
			name:   "AUFS metadata",
			layer:  ents(dir(".wh..wh.plnk/")),
			refuse: ErrBadWhiteout, entry: ".wh..wh.plnk",
			ctrdCheck: isWhiteout(".wh.plnk"),
		},
		{
			name:   "whiteout name as a directory",
			layer:  ents(reg(".wh.d/x", "junk")),
			refuse: ErrBadWhiteout, entry: ".wh.d/x",
			ctrdCheck: fileIs(".wh.d/x", "junk"),
		},
		{
			name:   "character device",
			layer:  ents(dev(tar.TypeChar, "dev/null", 1, 3)),
			refuse: ErrDeviceNode, entry: "dev/null",
			ctrdCheck: isDevice("dev/null", syscall.S_IFCHR),
		},
		{
			name:   "block device",
			layer:  ents(dev(tar.TypeBlock, "dev/sda", 8, 0)),
			refuse: ErrDeviceNode, entry: "dev/sda",
			ctrdCheck: isDevice("dev/sda", syscall.S_IFBLK),
		},
		{
			name:   "ready-made overlay whiteout",
			layer:  ents(dev(tar.TypeChar, "gone", 0, 0)),
			refuse: ErrDeviceNode, entry: "gone",
			ctrdCheck: isWhiteout("gone"),
		},
		{
			name:      "trusted overlay xattr",
			layer:     ents(dir("d/").mod(xattrs("trusted.overlay.opaque", "y"))),
			check:     xattrIs("d", "trusted.overlay.opaque", ""),
			ctrdCheck: xattrIs("d", "trusted.overlay.opaque", ""),
		},
		{
			name:      "user.overlay xattr",
			layer:     ents(reg("f", "x").mod(xattrs("user.overlay.redirect", "/etc", "user.keep", "1"))),
			check:     all(xattrIs("f", "user.overlay.redirect", ""), xattrIs("f", "user.keep", "1")),
			ctrdCheck: xattrIs("f", "user.overlay.redirect", "/etc"),
		},
		{
			name: "old GNU sparse file",
			layer: func(t *testing.T, _ sandbox) []byte {
				h := ustarBlock("sparse", tar.TypeGNUSparse, 512, true)
				copy(h[386:398], "00000000000\x00") // offset
				copy(h[398:410], "00000001000\x00") // numbytes
				copy(h[483:495], "10000000000\x00") // realsize, 1 GiB
				finishBlock(h)
				return append(append(h, make([]byte, 512)...), make([]byte, 1024)...)
			},
			refuse: ErrUnsupportedType, entry: "sparse",
			ctrdFails: true,
		},
		{
			name:   "reserved entry type",
			layer:  ents(reg("c", "x").mod(func(h *tar.Header) { h.Typeflag = tar.TypeCont })),
			refuse: ErrUnsupportedType, entry: "c",
			ctrdFails: true,
		},
		{
			name:  "whiteout of a file of the same layer",
			layer: ents(reg("x", "a"), reg(".wh.x", "")),
			fails: true, entry: ".wh.x",
			ctrdFails: true,
		},
		{
			name:  "file under a file",
			layer: ents(reg("f", "a"), reg("f/g", "b")),
			fails: true, entry: "f/g",
			ctrdFails: true,
		},
		{
			name: "truncated stream",
			layer: func(t *testing.T, _ sandbox) []byte {
				return mkTar(t, reg("f", strings.Repeat("x", 1000)))[:900]
			},
			fails: true, entry: "f",
			ctrdFails: true,
		},
	}
}

var reasons = []error{ErrUnsafePath, ErrDeviceNode, ErrBadWhiteout, ErrUnsupportedType, ErrLimit}

func TestApplyHostile(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			data := tc.layer(t, sb)
			before := sb.state(t)
			_, err := Apply(context.Background(), sb.upper, bytes.NewReader(data), ApplyOptions{})
			sb.assertUnchanged(t, before)

			if tc.refuse == nil && !tc.fails {
				if err != nil {
					t.Fatalf("Apply: %v; want the layer contained", err)
				}
				tc.check(t, sb)
				return
			}
			if err == nil {
				t.Fatal("Apply succeeded; want an error")
			}
			var ee *EntryError
			if !errors.As(err, &ee) {
				t.Fatalf("Apply: %v; want an *EntryError", err)
			}
			if want := strings.ReplaceAll(tc.entry, "$SB", sb.root); ee.Entry != want {
				t.Errorf("error names entry %q, want %q (%v)", ee.Entry, want, err)
			}
			if !strings.Contains(err.Error(), strconv.Quote(ee.Entry)) {
				t.Errorf("error %q does not quote the entry name", err)
			}
			if tc.refuse != nil && !errors.Is(err, tc.refuse) {
				t.Errorf("Apply: %v; want reason %v", err, tc.refuse)
			}
			if tc.fails {
				for _, r := range reasons {
					if errors.Is(err, r) {
						t.Errorf("Apply: %v; want a file-system error, not a refusal", err)
					}
				}
			}
			t.Logf("Apply: %v", err)
		})
	}
}

// TestContainerdBaseline records what containerd's applier does with each
// hostile layer on its own: it never writes outside the root, but it keeps
// (contains) much that Apply refuses.
func TestContainerdBaseline(t *testing.T) {
	for _, tc := range hostileCases() {
		t.Run(tc.name, func(t *testing.T) {
			sb := newSandbox(t)
			data := tc.layer(t, sb)
			before := sb.state(t)
			_, err := archive.Apply(context.Background(), sb.upper, bytes.NewReader(data),
				archive.WithConvertWhiteout(archive.OverlayConvertWhiteout))
			sb.assertUnchanged(t, before)
			if tc.ctrdFails {
				if err == nil {
					t.Fatal("archive.Apply succeeded; want an error")
				}
				t.Logf("archive.Apply: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("archive.Apply: %v", err)
			}
			if tc.ctrdCheck != nil {
				tc.ctrdCheck(t, sb)
			}
		})
	}
}
