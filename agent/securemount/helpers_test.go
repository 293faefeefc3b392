package securemount

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// exitErr is a command that ran and exited non-zero.
type exitErr int

func (e exitErr) Error() string { return fmt.Sprintf("exit status %d", int(e)) }
func (e exitErr) ExitCode() int { return int(e) }

// fakeSys records the plan: every call as a line, "<key>" marking a
// command that got the key on stdin.
type fakeSys struct {
	mu    sync.Mutex
	calls []string
	// keys are the stdin slices as passed (not copies), to check that
	// they are zeroed afterwards; stdins are copies taken at the call.
	keys   [][]byte
	stdins [][]byte
	// fail, if set, may fail a call.
	fail func(call string) error
	// out gives the standard output of calls that start with a key.
	out map[string]string
	// block, if set, is called (without the lock) before a call runs.
	block func(ctx context.Context, call string)
}

func (f *fakeSys) record(ctx context.Context, call string) error {
	if f.block != nil {
		f.block(ctx, call)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.fail != nil {
		return f.fail(call)
	}
	return nil
}

func (f *fakeSys) run(ctx context.Context, c cmd) ([]byte, error) {
	call := c.String()
	if c.stdin != nil {
		call += " <key>"
		f.mu.Lock()
		f.keys = append(f.keys, c.stdin)
		f.stdins = append(f.stdins, slices.Clone(c.stdin))
		f.mu.Unlock()
	}
	if err := f.record(ctx, call); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, v := range f.out {
		if strings.HasPrefix(call, k) {
			return []byte(v), nil
		}
	}
	return nil, nil
}

func (f *fakeSys) mount(src, target, fstype string, flags uintptr) error {
	return f.record(context.Background(), fmt.Sprintf("mount %s %s %s %s", src, target, fstype, flagNames(flags)))
}

func (f *fakeSys) unmount(target string) error {
	return f.record(context.Background(), "umount "+target)
}

func (f *fakeSys) zero(path string, offsets []int64, size int) error {
	return f.record(context.Background(), fmt.Sprintf("zero %s %d %v", path, size, offsets))
}

func (f *fakeSys) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// flagNames renders MS_* flags as mount(8) names.
func flagNames(fl uintptr) string {
	var out []string
	for _, n := range []struct {
		f    uintptr
		name string
	}{
		{unix.MS_RDONLY, "ro"}, {unix.MS_NOSUID, "nosuid"}, {unix.MS_NODEV, "nodev"},
		{unix.MS_NOEXEC, "noexec"}, {unix.MS_SYNCHRONOUS, "sync"}, {unix.MS_DIRSYNC, "dirsync"},
		{unix.MS_NOATIME, "noatime"}, {unix.MS_RELATIME, "relatime"}, {unix.MS_STRICTATIME, "strictatime"},
		{unix.MS_NODIRATIME, "nodiratime"}, {unix.MS_LAZYTIME, "lazytime"},
	} {
		if fl&n.f != 0 {
			out = append(out, n.name)
			fl &^= n.f
		}
	}
	if fl != 0 {
		out = append(out, fmt.Sprintf("%#x", fl))
	}
	return strings.Join(out, ",")
}

// env is a Mounter on a fake system: a block device node, a /sys tree, a
// /dev directory, a header directory and a mount table, all in a temporary
// directory.
type env struct {
	t         *testing.T
	root      string
	dev       string // <root>/dev/vdb, block device 254:16
	devID     string
	sysBlock  string
	devDir    string
	headerDir string
	mountinfo string
	fake      *fakeSys
	m         *Mounter
}

const (
	testMajor = 254
	testMinor = 16
)

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{
		t:         t,
		root:      root,
		devDir:    filepath.Join(root, "dev"),
		sysBlock:  filepath.Join(root, "sys/dev/block"),
		headerDir: filepath.Join(root, "run/luks-headers"),
		mountinfo: filepath.Join(root, "mountinfo"),
		fake:      &fakeSys{out: map[string]string{}},
	}
	e.dev = e.addDevice("vdb", testMajor, testMinor)
	e.devID = fmt.Sprintf("%d:%d", testMajor, testMinor)
	e.setMountinfo("22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n")
	cfg.SysDevBlock = e.sysBlock
	cfg.DevDir = e.devDir
	cfg.HeaderDir = e.headerDir
	e.m = newMounter(cfg, e.fake)
	e.m.mountinfo = e.mountinfo
	e.m.retryDelay = 0
	return e
}

// addDevice makes a block device node <devDir>/<name> and its /sys entry.
func (e *env) addDevice(name string, ma, mi uint32) string {
	e.t.Helper()
	p := filepath.Join(e.devDir, name)
	mkdir(e.t, filepath.Dir(p))
	if err := unix.Mknod(p, unix.S_IFBLK|0o600, int(unix.Mkdev(ma, mi))); err != nil {
		e.t.Fatalf("mknod %s: %v (the tests run as root, as make test does)", p, err)
	}
	e.writeSys(fmt.Sprintf("%d:%d", ma, mi), fmt.Sprintf("MAJOR=%d\nMINOR=%d\nDEVNAME=%s\nDEVTYPE=disk\n", ma, mi, name))
	return p
}

func (e *env) writeSys(id, uevent string) {
	e.t.Helper()
	d := filepath.Join(e.sysBlock, id)
	mkdir(e.t, d)
	writeFile(e.t, filepath.Join(d, "uevent"), uevent)
}

func (e *env) setMountinfo(s string) { writeFile(e.t, e.mountinfo, s) }

// mp returns a mount point path under the root.
func (e *env) mp(name string) string { return filepath.Join(e.root, "mnt", name) }

func (e *env) mapper(name string) string { return filepath.Join(e.devDir, "mapper", name) }

// opts returns the options of an ephemeral ext4 volume on the test
// device, changed by kv pairs ("" as a value deletes).
func (e *env) opts(kv ...string) map[string]string {
	o := map[string]string{
		"devicePath":     e.dev,
		"sourceType":     "empty",
		"encryptionType": "luks2",
		"targetType":     "fileSystem",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == "" {
			delete(o, kv[i])
		} else {
			o[kv[i]] = kv[i+1]
		}
	}
	return o
}

// untouched fails if anything was changed: no calls but the read-only
// probes, no header file, no mount point, nothing recorded.
func (e *env) untouched(mp string) {
	e.t.Helper()
	for _, c := range e.fake.Calls() {
		if !strings.Contains(c, " isLuks ") && !strings.Contains(c, " luksDump ") {
			e.t.Errorf("call %q was made", c)
		}
	}
	if _, err := os.Lstat(mp); !errors.Is(err, fs.ErrNotExist) {
		e.t.Errorf("mount point %s: %v, want it absent", mp, err)
	}
	e.noHeaders()
	if v := e.m.Volumes(); len(v) != 0 {
		e.t.Errorf("volumes %+v, want none", v)
	}
}

func (e *env) noHeaders() {
	e.t.Helper()
	ents, _ := os.ReadDir(e.headerDir)
	for _, d := range ents {
		e.t.Errorf("header %s left behind", d.Name())
	}
}

// keysZeroed fails unless every key passed to a command is all zeros.
func (e *env) keysZeroed() {
	e.t.Helper()
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	for i, k := range e.fake.keys {
		for _, b := range k {
			if b != 0 {
				e.t.Errorf("key %d (%d bytes) was not zeroed", i, len(k))
				break
			}
		}
	}
}

func mkdir(t *testing.T, p string) {
	t.Helper()
	if err := os.MkdirAll(p, 0o700); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	mkdir(t, filepath.Dir(p))
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeUnsealer unseals "sealed.<value>" to <value>.
type fakeUnsealer struct {
	got []string
	err error
}

func (u *fakeUnsealer) Unseal(_ context.Context, secret []byte) ([]byte, error) {
	u.got = append(u.got, string(secret))
	if u.err != nil {
		return nil, u.err
	}
	return []byte(strings.TrimPrefix(string(secret), "sealed.")), nil
}
