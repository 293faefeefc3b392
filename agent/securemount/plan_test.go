package securemount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The cryptsetup commands of the plan, up to the per-request arguments.
const (
	luksFormat = "cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64 --key-size 512 --sector-size 4096 --pbkdf pbkdf2 --hash sha256 --pbkdf-force-iterations 1000 --key-file=-"
	luksOpen   = "cryptsetup --batch-mode open --type luks2 --key-file=-"
	kataMkfs   = "-O ^has_journal -m 0 -i 163840 -I 128"
)

// TestPlan checks the exact commands of each kind of request and of its
// Close, and the state left in between.
func TestPlan(t *testing.T) {
	type names struct{ dev, mp, name, mapper, header string }
	tests := []struct {
		name      string
		opts      func(e *env) map[string]string
		flags     []string
		cfg       Config
		setup     func(e *env)
		mp        func(e *env) string
		want      func(n names) []string
		wantClose func(n names) []string
		ephemeral bool
	}{
		{
			name: "ephemeral ext4 (kata emptyDir)",
			opts: func(e *env) map[string]string { return e.opts("mkfsOpts", kataMkfs, "dataIntegrity", "false") },
			want: func(n names) []string {
				return []string{
					luksFormat + " --header " + n.header + " " + n.dev + " <key>",
					luksOpen + " --header " + n.header + " " + n.dev + " " + n.name + " <key>",
					"mkfs.ext4 -F " + kataMkfs + " " + n.mapper,
					"mount " + n.mapper + " " + n.mp + " ext4 noatime",
				}
			},
			wantClose: func(n names) []string { return []string{"umount " + n.mp, "cryptsetup close " + n.name} },
			ephemeral: true,
		},
		{
			name: "ephemeral ext4 with integrity by deviceId",
			opts: func(e *env) map[string]string {
				return e.opts("devicePath", "", "deviceId", e.devID, "dataIntegrity", "true", "filesystemType", "ext4", "mkfsOpts", "")
			},
			want: func(n names) []string {
				return []string{
					luksFormat + " --header " + n.header + " --integrity hmac-sha256 --integrity-no-wipe " + n.dev + " <key>",
					luksOpen + " --header " + n.header + " --integrity-no-journal " + n.dev + " " + n.name + " <key>",
					"zero " + n.mapper + " 4096 [0]",
					"mkfs.ext4 -F -n " + n.mapper,
					"zero " + n.mapper + " 4096 [134217728 402653184]",
					"mkfs.ext4 -F -E lazy_itable_init=0,lazy_journal_init=0 " + n.mapper,
					"mount " + n.mapper + " " + n.mp + " ext4 noatime",
				}
			},
			wantClose: func(n names) []string { return []string{"umount " + n.mp, "cryptsetup close " + n.name} },
			ephemeral: true,
		},
		{
			name:  "persistent format with a file key and integrity",
			setup: func(e *env) { writeFile(e.t, e.root+"/key", strings.Repeat("k", 64)) },
			opts: func(e *env) map[string]string {
				return e.opts("key", "file://"+e.root+"/key", "dataIntegrity", "true", "mapperName", "data", "mkfsOpts", "-q -E nodiscard")
			},
			flags: []string{"nosuid", "nodev"},
			want: func(n names) []string {
				return []string{
					luksFormat + " --integrity hmac-sha256 --integrity-no-wipe " + n.dev + " <key>",
					luksOpen + " " + n.dev + " data <key>",
					"zero " + n.mapper + " 4096 [0]",
					"mkfs.ext4 -F -n -E nodiscard " + n.mapper,
					"zero " + n.mapper + " 4096 [134217728 402653184]",
					"mkfs.ext4 -F -q -E nodiscard,lazy_itable_init=0,lazy_journal_init=0 " + n.mapper,
					"mount " + n.mapper + " " + n.mp + " ext4 nosuid,nodev,noatime",
				}
			},
			wantClose: func(n names) []string { return []string{"umount " + n.mp, "cryptsetup close data"} },
		},
		{
			name: "encrypted ext3 read-only with a sealed key and integrity",
			cfg:  Config{Unsealer: &fakeUnsealer{}},
			opts: func(e *env) map[string]string {
				return e.opts("sourceType", "encrypted", "key", "sealed."+strings.Repeat("s", 40), "filesystemType", "ext3", "dataIntegrity", "true")
			},
			flags: []string{"ro"},
			want: func(n names) []string {
				return []string{
					"cryptsetup isLuks --type luks2 " + n.dev,
					"cryptsetup luksDump --dump-json-metadata " + n.dev,
					luksOpen + " --readonly " + n.dev + " " + n.name + " <key>",
					"mount " + n.mapper + " " + n.mp + " ext3 ro,noatime",
				}
			},
			wantClose: func(n names) []string { return []string{"umount " + n.mp, "cryptsetup close " + n.name} },
		},
		{
			name:  "encrypted device target",
			setup: func(e *env) { writeFile(e.t, e.root+"/key", "passphrase\n") },
			opts: func(e *env) map[string]string {
				return e.opts("sourceType", "encrypted", "targetType", "device", "key", "file://"+e.root+"/key")
			},
			want: func(n names) []string {
				return []string{
					"cryptsetup isLuks --type luks2 " + n.dev,
					"cryptsetup luksDump --dump-json-metadata " + n.dev,
					luksOpen + " " + n.dev + " " + n.name + " <key>",
				}
			},
			wantClose: func(n names) []string { return []string{"cryptsetup close " + n.name} },
		},
		{
			name:  "ephemeral device target read-only",
			opts:  func(e *env) map[string]string { return e.opts("targetType", "device") },
			flags: []string{"ro"},
			want: func(n names) []string {
				return []string{
					luksFormat + " --header " + n.header + " " + n.dev + " <key>",
					luksOpen + " --header " + n.header + " --readonly " + n.dev + " " + n.name + " <key>",
				}
			},
			wantClose: func(n names) []string { return []string{"cryptsetup close " + n.name} },
			ephemeral: true,
		},
		{
			name:  "ephemeral xfs mounted read-only",
			opts:  func(e *env) map[string]string { return e.opts("filesystemType", "xfs", "mkfsOpts", "-m crc=1") },
			flags: []string{"ro", "relatime"},
			mp:    func(e *env) string { return e.mp("deep/er/xfs") },
			want: func(n names) []string {
				return []string{
					luksFormat + " --header " + n.header + " " + n.dev + " <key>",
					luksOpen + " --header " + n.header + " " + n.dev + " " + n.name + " <key>",
					"mkfs.xfs -f -m crc=1 " + n.mapper,
					"mount " + n.mapper + " " + n.mp + " xfs ro,relatime",
				}
			},
			wantClose: func(n names) []string { return []string{"umount " + n.mp, "cryptsetup close " + n.name} },
			ephemeral: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			e.fake.out["cryptsetup luksDump"] = readTestdata(t, "luks2-integrity.json")
			e.fake.out["mkfs.ext4 -F -n"] = readTestdata(t, "mke2fs-n-600M.txt")
			if tc.setup != nil {
				tc.setup(e)
			}
			mp := e.mp("a")
			if tc.mp != nil {
				mp = tc.mp(e)
			}
			opts := tc.opts(e)
			name := opts["mapperName"]
			if name == "" {
				name = DefaultMapperName(mp)
			}
			n := names{dev: e.dev, mp: mp, name: name, mapper: e.mapper(name), header: filepath.Join(e.headerDir, name+".header")}
			if err := e.m.SecureMount(context.Background(), VolumeType, opts, tc.flags, mp); err != nil {
				t.Fatal(err)
			}
			if got, want := e.fake.Calls(), tc.want(n); !slices.Equal(got, want) {
				t.Errorf("plan:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			e.keysZeroed()
			e.noHeaders()
			target := opts["targetType"]
			if target == targetDevice {
				if l, err := os.Readlink(mp); err != nil || l != n.mapper {
					t.Errorf("symlink %s -> %q, %v; want %s", mp, l, err, n.mapper)
				}
			} else if fi, err := os.Stat(mp); err != nil || !fi.IsDir() {
				t.Errorf("mount point: %v", err)
			}
			wantVol := Volume{MountPoint: mp, Device: e.dev, Mapper: name, Target: target,
				Ephemeral: tc.ephemeral, Integrity: opts["dataIntegrity"] == "true"}
			if v := e.m.Volumes(); len(v) != 1 || v[0] != wantVol {
				t.Errorf("volumes %+v, want %+v", v, wantVol)
			}

			e.fake.calls = nil
			if err := e.m.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got, want := e.fake.Calls(), tc.wantClose(n); !slices.Equal(got, want) {
				t.Errorf("close:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// Everything created is gone, up to the test's root.
			if _, err := os.Lstat(filepath.Join(e.root, "mnt")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s/mnt left behind: %v", e.root, err)
			}
			if v := e.m.Volumes(); len(v) != 0 {
				t.Errorf("volumes after Close: %+v", v)
			}
			e.fake.calls = nil
			if err := e.m.Close(context.Background()); err != nil || len(e.fake.Calls()) != 0 {
				t.Errorf("second Close: %v, calls %q", err, e.fake.Calls())
			}
		})
	}
}

// TestExistingMountPoint: a mount point directory that existed is left
// in place by Close.
func TestExistingMountPoint(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	mkdir(t, mp)
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, mp); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(mp); err != nil || !fi.IsDir() {
		t.Errorf("existing mount point removed: %v", err)
	}
}

// TestRollback fails each step of a request in turn and checks that the
// steps already done are undone, in reverse, and that nothing is left:
// the same request then succeeds.
func TestRollback(t *testing.T) {
	tests := []struct {
		name string
		opts func(e *env) map[string]string
		// plan of a successful request, and the index of the open.
		plan func(e *env, mp, name, header string) []string
		open int
		msgs []string // error message per failing step
	}{
		{
			name: "ephemeral ext4 with integrity",
			opts: func(e *env) map[string]string { return e.opts("dataIntegrity", "true") },
			plan: func(e *env, mp, name, header string) []string {
				m := e.mapper(name)
				return []string{
					luksFormat + " --header " + header + " --integrity hmac-sha256 --integrity-no-wipe " + e.dev + " <key>",
					luksOpen + " --header " + header + " --integrity-no-journal " + e.dev + " " + name + " <key>",
					"zero " + m + " 4096 [0]",
					"mkfs.ext4 -F -n " + m,
					"zero " + m + " 4096 [134217728 402653184]",
					"mkfs.ext4 -F -E lazy_itable_init=0,lazy_journal_init=0 " + m,
					"mount " + m + " " + mp + " ext4 noatime",
				}
			},
			open: 1,
			msgs: []string{"format " + "%s as LUKS2", "open %s as", "zero the first block", "plan ext4", "zero the backup superblocks", "make ext4", "mount "},
		},
		{
			name: "encrypted file system",
			opts: func(e *env) map[string]string {
				writeFile(e.t, e.root+"/key", "passphrase\n")
				return e.opts("sourceType", "encrypted", "key", "file://"+e.root+"/key")
			},
			plan: func(e *env, mp, name, header string) []string {
				return []string{
					"cryptsetup isLuks --type luks2 " + e.dev,
					"cryptsetup luksDump --dump-json-metadata " + e.dev,
					luksOpen + " " + e.dev + " " + name + " <key>",
					"mount " + e.mapper(name) + " " + mp + " ext4 noatime",
				}
			},
			open: 2,
			msgs: []string{"%s has no LUKS2 header", "read LUKS2 header of %s", "open %s as", "mount "},
		},
		{
			name: "ephemeral device target",
			opts: func(e *env) map[string]string { return e.opts("targetType", "device") },
			plan: func(e *env, mp, name, header string) []string {
				return []string{
					luksFormat + " --header " + header + " " + e.dev + " <key>",
					luksOpen + " --header " + header + " " + e.dev + " " + name + " <key>",
				}
			},
			open: 1,
			msgs: []string{"format %s as LUKS2", "open %s as"},
		},
	}
	for _, tc := range tests {
		e0 := newEnv(t, Config{})
		mp0 := e0.mp("a/b")
		name0 := DefaultMapperName(mp0)
		steps := len(tc.plan(e0, mp0, name0, ""))
		for i := range steps {
			t.Run(fmt.Sprintf("%s/step%d", tc.name, i), func(t *testing.T) {
				e := newEnv(t, Config{})
				e.fake.out["cryptsetup luksDump"] = readTestdata(t, "luks2-plain.json")
				e.fake.out["mkfs.ext4 -F -n"] = readTestdata(t, "mke2fs-n-600M.txt")
				mp := e.mp("a/b")
				name := DefaultMapperName(mp)
				plan := tc.plan(e, mp, name, filepath.Join(e.headerDir, name+".header"))
				e.fake.fail = func(call string) error {
					if call == plan[i] {
						return exitErr(1)
					}
					return nil
				}
				opts := tc.opts(e)
				err := e.m.SecureMount(context.Background(), VolumeType, opts, nil, mp)
				if err == nil {
					t.Fatal("SecureMount succeeded")
				}
				if msg := strings.ReplaceAll(tc.msgs[i], "%s", e.dev); !strings.Contains(err.Error(), msg) {
					t.Errorf("error %q does not contain %q", err, msg)
				}
				want := slices.Clone(plan[:i+1])
				if i > tc.open {
					want = append(want, "cryptsetup close "+name)
				}
				if got := e.fake.Calls(); !slices.Equal(got, want) {
					t.Errorf("calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				if _, err := os.Lstat(filepath.Join(e.root, "mnt")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("mount point directories left behind: %v", err)
				}
				e.noHeaders()
				e.keysZeroed()
				if v := e.m.Volumes(); len(v) != 0 {
					t.Errorf("volumes %+v", v)
				}
				// Nothing is left in use: the same request now works.
				e.fake.fail = nil
				if err := e.m.SecureMount(context.Background(), VolumeType, opts, nil, mp); err != nil {
					t.Errorf("retry: %v", err)
				}
			})
		}
	}
}

// TestRollbackFails: when undoing fails too, both errors are reported and
// the volume stays recorded (and in use) until Close succeeds.
func TestRollbackFails(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	name := DefaultMapperName(mp)
	closeFails := true
	e.fake.fail = func(call string) error {
		switch {
		case strings.HasPrefix(call, "mount "):
			return unix.ENODEV
		case strings.HasPrefix(call, "cryptsetup close") && closeFails:
			return exitErr(5)
		}
		return nil
	}
	err := e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, mp)
	if !errors.Is(err, unix.ENODEV) || !strings.Contains(err.Error(), "roll back: close mapping "+name) {
		t.Fatalf("error %v", err)
	}
	closes := 0
	for _, c := range e.fake.Calls() {
		if c == "cryptsetup close "+name {
			closes++
		}
	}
	if closes != e.m.closeTries {
		t.Errorf("%d close attempts, want %d", closes, e.m.closeTries)
	}
	if v := e.m.Volumes(); len(v) != 1 || v[0].MountPoint != mp {
		t.Fatalf("volumes %+v", v)
	}
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, e.mp("b")); !errors.Is(err, ErrExists) {
		t.Errorf("device still in use: %v, want ErrExists", err)
	}
	if err := e.m.Close(context.Background()); err == nil || !strings.Contains(err.Error(), "close mapping "+name) {
		t.Errorf("Close: %v", err)
	}
	closeFails = false
	e.fake.calls = nil
	if err := e.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := e.fake.Calls(); !slices.Equal(got, []string{"cryptsetup close " + name}) {
		t.Errorf("calls %q", got)
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left: %v", err)
	}
}

// TestRollbackCanceled: a request whose context ends mid-way is rolled
// back all the same.
func TestRollbackCanceled(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	name := DefaultMapperName(mp)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.fake.block = func(_ context.Context, call string) {
		if strings.HasPrefix(call, "mkfs.ext4") {
			cancel()
		}
	}
	err := e.m.SecureMount(ctx, VolumeType, e.opts(), nil, mp)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	calls := e.fake.Calls()
	if len(calls) != 4 || calls[3] != "cryptsetup close "+name {
		t.Errorf("calls %q, want format, open, mkfs, close", calls)
	}
	if _, err := os.Lstat(mp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point left: %v", err)
	}
}

func TestClose(t *testing.T) {
	e := newEnv(t, Config{})
	vdc := e.addDevice("vdc", 254, 32)
	key := e.root + "/key"
	writeFile(t, key, "passphrase")
	e.fake.out["cryptsetup luksDump"] = readTestdata(t, "luks2-plain.json")
	ctx := context.Background()
	devMP, fsMP := e.mp("dev"), e.mp("fs")
	devName, fsName := DefaultMapperName(devMP), DefaultMapperName(fsMP)
	if err := e.m.SecureMount(ctx, VolumeType, e.opts("devicePath", vdc, "sourceType", "encrypted", "targetType", "device", "key", "file://"+key), nil, devMP); err != nil {
		t.Fatal(err)
	}
	if err := e.m.SecureMount(ctx, VolumeType, e.opts(), nil, fsMP); err != nil {
		t.Fatal(err)
	}
	if v := e.m.Volumes(); len(v) != 2 || v[0].MountPoint != devMP || v[1].MountPoint != fsMP {
		t.Fatalf("volumes %+v", v)
	}

	// The last mounted fails to unmount: Close goes on with the other one.
	e.fake.calls = nil
	e.fake.fail = func(call string) error {
		if call == "umount "+fsMP {
			return unix.EBUSY
		}
		return nil
	}
	err := e.m.Close(ctx)
	if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), fsMP) || strings.Contains(err.Error(), devMP) {
		t.Errorf("Close: %v", err)
	}
	if got, want := e.fake.Calls(), []string{"umount " + fsMP, "cryptsetup close " + devName}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if _, err := os.Lstat(devMP); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("symlink left: %v", err)
	}
	if v := e.m.Volumes(); len(v) != 1 || v[0].MountPoint != fsMP {
		t.Fatalf("volumes %+v", v)
	}

	// Retried: an unmount that finds nothing mounted (EINVAL) and a
	// mapping already gone (exit code 4) count as done.
	e.fake.calls = nil
	e.fake.fail = func(call string) error {
		switch call {
		case "umount " + fsMP:
			return unix.EINVAL
		case "cryptsetup close " + fsName:
			return exitErr(4)
		}
		return nil
	}
	if err := e.m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got, want := e.fake.Calls(), []string{"umount " + fsMP, "cryptsetup close " + fsName}; !slices.Equal(got, want) {
		t.Errorf("calls %q, want %q", got, want)
	}
	if v := e.m.Volumes(); len(v) != 0 {
		t.Errorf("volumes %+v", v)
	}
}

// TestCloseRetries: cryptsetup close is retried while the device is busy.
func TestCloseRetries(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, mp); err != nil {
		t.Fatal(err)
	}
	tries := 0
	e.fake.fail = func(call string) error {
		if strings.HasPrefix(call, "cryptsetup close") {
			if tries++; tries < 3 {
				return exitErr(5)
			}
		}
		return nil
	}
	if err := e.m.Close(context.Background()); err != nil || tries != 3 {
		t.Errorf("Close: %v after %d tries", err, tries)
	}
}

func TestDuplicate(t *testing.T) {
	e := newEnv(t, Config{})
	vdc := e.addDevice("vdc", 254, 32)
	ctx := context.Background()
	first := e.mp("a")
	if err := e.m.SecureMount(ctx, VolumeType, e.opts(), nil, first); err != nil {
		t.Fatal(err)
	}
	n := len(e.fake.Calls())
	tests := []struct {
		name string
		opts map[string]string
		mp   string
		msg  string
	}{
		{"same device", e.opts(), e.mp("b"), "is already secure-mounted at"},
		{"same device by deviceId", e.opts("devicePath", "", "deviceId", e.devID), e.mp("b"), "is already secure-mounted at"},
		{"same mount point", e.opts("devicePath", vdc), first, "mount point already has a secure mount"},
		{"same mapper name", e.opts("devicePath", vdc, "mapperName", DefaultMapperName(first)), e.mp("b"), "mapper name"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := e.m.SecureMount(ctx, VolumeType, tc.opts, nil, tc.mp)
			if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want ErrExists with %q", err, tc.msg)
			}
			if got := len(e.fake.Calls()); got != n {
				t.Errorf("%d more calls", got-n)
			}
		})
	}
}

// TestSerialised: concurrent requests run one at a time, and a waiting
// request gives up when its context ends.
func TestSerialised(t *testing.T) {
	e := newEnv(t, Config{})
	devs := []string{e.dev}
	for i, n := range []string{"vdc", "vdd", "vde"} {
		devs = append(devs, e.addDevice(n, 254, uint32(32+16*i)))
	}
	e.fake.block = func(context.Context, string) { time.Sleep(time.Millisecond) }
	var wg sync.WaitGroup
	for i, d := range devs {
		wg.Go(func() {
			if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("devicePath", d), nil, e.mp(fmt.Sprint(i))); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	// Each request's calls are contiguous.
	calls := e.fake.Calls()
	if len(calls) != 4*len(devs) {
		t.Fatalf("%d calls", len(calls))
	}
	for i := 0; i < len(calls); i += 4 {
		dev := strings.Fields(calls[i])[len(strings.Fields(calls[i]))-2]
		for _, c := range calls[i : i+4] {
			if !strings.Contains(c, dev) && !strings.Contains(c, DefaultMapperName(e.mp(fmt.Sprint(slices.Index(devs, dev))))) {
				t.Errorf("calls interleaved: %q in the request for %s", c, dev)
			}
		}
	}
	if v := e.m.Volumes(); len(v) != len(devs) {
		t.Errorf("%d volumes", len(v))
	}
	if err := e.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	release := make(chan struct{})
	started := make(chan struct{})
	e.fake.block = func(_ context.Context, call string) {
		if strings.Contains(call, "luksFormat") {
			close(started)
			<-release
		}
	}
	done := make(chan error)
	go func() { done <- e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, e.mp("x")) }()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.m.SecureMount(ctx, VolumeType, e.opts("devicePath", devs[1]), nil, e.mp("y")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting request: %v, want DeadlineExceeded", err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel2()
	if err := e.m.Close(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiting Close: %v, want DeadlineExceeded", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestCheckHeader(t *testing.T) {
	tests := []struct {
		file      string
		integrity bool
		msg       string // "" for accepted
	}{
		{"luks2-plain.json", false, ""},
		{"luks2-plain.json", true, `segment 0 has no keyed integrity (got "")`},
		{"luks2-integrity.json", true, ""},
		{"luks2-integrity.json", false, ""},
		{"luks2-integrity-crc32c.json", true, `no keyed integrity (got "crc32c")`},
		{"luks2-linear.json", false, `segment 0 is of type "linear"`},
		{"luks2-cipher-null.json", false, `cipher "cipher_null-ecb"`},
		{"luks2-reencrypt.json", false, `mandatory requirements ["online-reencrypt-v2"]`},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%s/%v", tc.file, tc.integrity), func(t *testing.T) {
			err := checkHeader([]byte(readTestdata(t, tc.file)), tc.integrity)
			switch {
			case tc.msg == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.msg != "" && (err == nil || !strings.Contains(err.Error(), tc.msg)):
				t.Errorf("error %v, want %q", err, tc.msg)
			}
		})
	}
	for _, bad := range []string{"", "{", `{"segments":{}}`, `[]`} {
		if err := checkHeader([]byte(bad), false); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestProbeRefuses: an encrypted source without an acceptable LUKS2
// header is refused before anything changes.
func TestProbeRefuses(t *testing.T) {
	tests := []struct {
		name  string
		fail  error
		dump  string
		integ string
		want  error
		msg   string
	}{
		{"not LUKS2", exitErr(1), "luks2-plain.json", "false", ErrNotLUKS2, "has no LUKS2 header"},
		{"probe error", exitErr(4), "luks2-plain.json", "false", nil, "probe LUKS2 header"},
		{"plaintext segment", nil, "luks2-linear.json", "false", ErrNotLUKS2, `"linear"`},
		{"integrity stripped", nil, "luks2-plain.json", "true", ErrNotLUKS2, "no keyed integrity"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			writeFile(t, e.root+"/key", "passphrase")
			e.fake.out["cryptsetup luksDump"] = readTestdata(t, tc.dump)
			e.fake.fail = func(call string) error {
				if strings.Contains(call, " isLuks ") {
					return tc.fail
				}
				return nil
			}
			mp := e.mp("a")
			err := e.m.SecureMount(context.Background(), VolumeType,
				e.opts("sourceType", "encrypted", "key", "file://"+e.root+"/key", "dataIntegrity", tc.integ), nil, mp)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want %v with %q", err, tc.want, tc.msg)
			}
			e.untouched(mp)
		})
	}
}

func TestSuperblockOffsets(t *testing.T) {
	tests := []struct {
		file string
		want []int64
	}{
		{"mke2fs-n-600M.txt", []int64{32768 * 4096, 98304 * 4096}},
		{"mke2fs-n-64M-1k.txt", []int64{8192 * 1024, 24576 * 1024, 40960 * 1024, 57344 * 1024}},
		{"mke2fs-n-single-group.txt", nil},
		{"mke2fs-n-20G.txt", []int64{32768 * 4096, 98304 * 4096, 163840 * 4096, 229376 * 4096, 294912 * 4096,
			819200 * 4096, 884736 * 4096, 1605632 * 4096, 2654208 * 4096, 4096000 * 4096}},
	}
	for _, tc := range tests {
		got, err := superblockOffsets(readTestdata(t, tc.file))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: %v, %v; want %v", tc.file, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"",
		"mke2fs 1.47.0 (5-Feb-2023)\n",
		"Creating filesystem with 10 4k blocks\nSuperblock backups stored on blocks: \n\t32768, x\n",
		"Creating filesystem with 10 4k blocks\nSuperblock backups stored on blocks: \n\t-1\n",
		"Creating filesystem with 10 0k blocks\n",
	} {
		if _, err := superblockOffsets(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestHeaderFile: an ephemeral volume's detached header is a 0600 file
// of HeaderSize in HeaderDir while cryptsetup formats and opens, and is
// gone once the mapping is open.
func TestHeaderFile(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	header := filepath.Join(e.headerDir, DefaultMapperName(mp)+".header")
	seen := 0
	e.fake.block = func(_ context.Context, call string) {
		if !strings.Contains(call, "--header") {
			return
		}
		seen++
		fi, err := os.Stat(header)
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != HeaderSize {
			t.Errorf("%s: header %v, %v", call, fi, err)
		}
		if d, err := os.Stat(e.headerDir); err != nil || d.Mode().Perm() != 0o700 {
			t.Errorf("header directory: %v, %v", d, err)
		}
	}
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts(), nil, mp); err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Errorf("%d commands with --header, want format and open", seen)
	}
	e.noHeaders()
	if fi, err := os.Stat(mp); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("mount point: %v, %v; want a 0700 directory", fi, err)
	}
}

// TestReplacedSymlink: Close leaves alone a device-target symlink that
// someone replaced, and still closes the mapping.
func TestReplacedSymlink(t *testing.T) {
	e := newEnv(t, Config{})
	mp := e.mp("a")
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("targetType", "device"), nil, mp); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mp); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/elsewhere", mp); err != nil {
		t.Fatal(err)
	}
	e.fake.calls = nil
	if err := e.m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(mp); err != nil || l != "/elsewhere" {
		t.Errorf("replaced symlink: %q, %v", l, err)
	}
	if got := e.fake.Calls(); !slices.Equal(got, []string{"cryptsetup close " + DefaultMapperName(mp)}) {
		t.Errorf("calls %q", got)
	}
}

// TestNew: New fills in the defaults and a fresh Mounter closes cleanly.
func TestNew(t *testing.T) {
	m := New(Config{})
	c := m.cfg
	if c.Cryptsetup != DefaultCryptsetup || c.HeaderDir != DefaultHeaderDir || c.SysDevBlock != DefaultSysDevBlock ||
		c.DevDir != DefaultDevDir || c.Logger == nil || c.KBC != nil || c.Unsealer != nil {
		t.Errorf("config %+v", c)
	}
	if _, ok := m.sys.(realSys); !ok {
		t.Errorf("sys %T, want realSys", m.sys)
	}
	if v := m.Volumes(); len(v) != 0 {
		t.Errorf("volumes %+v", v)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Error(err)
	}
}
