package securemount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
)

// TestRefused checks that every bad request fails with its documented
// class and message and changes nothing: no command, no directory, no
// header.
func TestRefused(t *testing.T) {
	var nilUnsealer *sealed.Unsealer
	tests := []struct {
		name  string
		vt    string
		opts  func(e *env) map[string]string
		flags []string
		mp    func(e *env) string
		cfg   Config
		setup func(e *env)
		want  error
		msg   string
		not   string // must not appear in the error
	}{
		{name: "volume type", vt: "alibaba-cloud-oss", want: ErrUnsupported, msg: `volume type "alibaba-cloud-oss"`},
		{name: "no encryptionType", opts: func(e *env) map[string]string { return e.opts("encryptionType", "") },
			want: ErrInvalid, msg: `"encryptionType": missing`},
		{name: "zfs", opts: func(e *env) map[string]string {
			return e.opts("encryptionType", "zfs", "pool", "p", "dataset", "d")
		}, want: ErrUnsupported, msg: `encryptionType "zfs"`},
		{name: "luks1", opts: func(e *env) map[string]string { return e.opts("encryptionType", "luks") },
			want: ErrUnsupported, msg: `encryptionType "luks"`},
		{name: "unknown option", opts: func(e *env) map[string]string { return e.opts("bogus", "1") },
			want: ErrInvalid, msg: `unknown option "bogus"`},
		{name: "zfs option with luks2", opts: func(e *env) map[string]string { return e.opts("pool", "p") },
			want: ErrInvalid, msg: `unknown option "pool"`},
		{name: "relative mount point", mp: func(*env) string { return "mnt/a" }, want: ErrInvalid, msg: "not absolute"},
		{name: "unclean mount point", mp: func(e *env) string { return e.root + "/mnt/../a" }, want: ErrInvalid, msg: "not clean"},
		{name: "trailing slash", mp: func(e *env) string { return e.root + "/mnt/a/" }, want: ErrInvalid, msg: "not clean"},
		{name: "root mount point", mp: func(*env) string { return "/" }, want: ErrInvalid, msg: "root directory"},
		{name: "empty mount point", mp: func(*env) string { return "" }, want: ErrInvalid, msg: "empty path"},
		{name: "NUL in mount point", mp: func(e *env) string { return e.root + "/a\x00b" }, want: ErrInvalid, msg: "NUL"},
		{name: "no device", opts: func(e *env) map[string]string { return e.opts("devicePath", "") },
			want: ErrInvalid, msg: `neither "deviceId" nor "devicePath"`},
		{name: "deviceId one number", opts: func(e *env) map[string]string { return e.opts("deviceId", "7") },
			want: ErrInvalid, msg: `"7" is not MAJ:MIN`},
		{name: "deviceId letters", opts: func(e *env) map[string]string { return e.opts("deviceId", "7:x") },
			want: ErrInvalid, msg: "not MAJ:MIN"},
		{name: "deviceId sign", opts: func(e *env) map[string]string { return e.opts("deviceId", "+7:0") },
			want: ErrInvalid, msg: "not MAJ:MIN"},
		{name: "deviceId three parts", opts: func(e *env) map[string]string { return e.opts("deviceId", "7:0:1") },
			want: ErrInvalid, msg: "not MAJ:MIN"},
		{name: "deviceId too big", opts: func(e *env) map[string]string { return e.opts("deviceId", "4294967296:0") },
			want: ErrInvalid, msg: "not MAJ:MIN"},
		{name: "relative devicePath", opts: func(e *env) map[string]string { return e.opts("devicePath", "dev/vdb") },
			want: ErrInvalid, msg: "not absolute"},
		{name: "no sourceType", opts: func(e *env) map[string]string { return e.opts("sourceType", "") },
			want: ErrInvalid, msg: `"sourceType": missing`},
		{name: "bad sourceType", opts: func(e *env) map[string]string { return e.opts("sourceType", "plain") },
			want: ErrInvalid, msg: `"plain" is not "empty" or "encrypted"`},
		{name: "no targetType", opts: func(e *env) map[string]string { return e.opts("targetType", "") },
			want: ErrInvalid, msg: `"targetType": missing`},
		{name: "bad targetType", opts: func(e *env) map[string]string { return e.opts("targetType", "filesystem") },
			want: ErrInvalid, msg: `"filesystem" is not "device" or "fileSystem"`},
		{name: "filesystemType with device", opts: func(e *env) map[string]string {
			return e.opts("targetType", "device", "filesystemType", "ext4")
		}, want: ErrInvalid, msg: `"filesystemType": applies only to targetType "fileSystem"`},
		{name: "ntfs", opts: func(e *env) map[string]string { return e.opts("filesystemType", "ntfs") },
			want: ErrUnsupported, msg: `filesystemType "ntfs"`},
		{name: "mkfsOpts with encrypted", opts: func(e *env) map[string]string {
			return e.opts("sourceType", "encrypted", "key", "file:///k", "mkfsOpts", "-m 0")
		}, want: ErrInvalid, msg: `"mkfsOpts": applies only`},
		{name: "mkfsOpts with device", opts: func(e *env) map[string]string {
			return e.opts("targetType", "device", "mkfsOpts", "-m 0")
		}, want: ErrInvalid, msg: `"mkfsOpts": applies only`},
		{name: "dataIntegrity yes", opts: func(e *env) map[string]string { return e.opts("dataIntegrity", "yes") },
			want: ErrInvalid, msg: `"yes" is not "true" or "false"`},
		{name: "integrity xfs", opts: func(e *env) map[string]string {
			return e.opts("dataIntegrity", "true", "filesystemType", "xfs")
		}, want: ErrUnsupported, msg: `dataIntegrity with filesystemType "xfs"`},
		{name: "integrity lazy itable", opts: func(e *env) map[string]string {
			return e.opts("dataIntegrity", "true", "mkfsOpts", "-E lazy_itable_init=1")
		}, want: ErrInvalid, msg: "lazy_itable_init=1 cannot be used"},
		{name: "integrity lazy journal joined", opts: func(e *env) map[string]string {
			return e.opts("dataIntegrity", "true", "mkfsOpts", "-Enodiscard,lazy_journal_init")
		}, want: ErrInvalid, msg: "lazy_journal_init= cannot be used"},
		{name: "mapper slash", opts: func(e *env) map[string]string { return e.opts("mapperName", "a/b") },
			want: ErrInvalid, msg: "outside [A-Za-z0-9_-]"},
		{name: "mapper dotdot", opts: func(e *env) map[string]string { return e.opts("mapperName", "../x") },
			want: ErrInvalid, msg: "must start with a letter or digit"},
		{name: "mapper dash", opts: func(e *env) map[string]string { return e.opts("mapperName", "-x") },
			want: ErrInvalid, msg: "must start with a letter or digit"},
		{name: "mapper control", opts: func(e *env) map[string]string { return e.opts("mapperName", "control") },
			want: ErrInvalid, msg: "control node"},
		{name: "mapper temporary", opts: func(e *env) map[string]string {
			return e.opts("mapperName", "temporary-cryptsetup-1")
		}, want: ErrInvalid, msg: "reserved for cryptsetup"},
		{name: "mapper empty", opts: func(e *env) map[string]string {
			o := e.opts()
			o["mapperName"] = ""
			return o
		}, want: ErrInvalid, msg: `"mapperName": empty`},
		{name: "mapper long", opts: func(e *env) map[string]string { return e.opts("mapperName", strings.Repeat("a", 101)) },
			want: ErrInvalid, msg: "longer than 100"},
		{name: "mapper space", opts: func(e *env) map[string]string { return e.opts("mapperName", "a b") },
			want: ErrInvalid, msg: "outside"},
		{name: "mapper unicode", opts: func(e *env) map[string]string { return e.opts("mapperName", "aü") },
			want: ErrInvalid, msg: "outside"},
		{name: "empty key", opts: func(e *env) map[string]string {
			o := e.opts()
			o["key"] = ""
			return o
		}, want: ErrInvalid, msg: `"key": empty`},
		{name: "raw passphrase key", opts: func(e *env) map[string]string { return e.opts("key", "hunter2-secret") },
			want: ErrInvalid, msg: "unsupported scheme", not: "hunter2"},
		{name: "bad kbs key", opts: func(e *env) map[string]string { return e.opts("key", "kbs:///default/key") },
			want: ErrInvalid, msg: "exactly 3 path segments"},
		{name: "relative file key", opts: func(e *env) map[string]string { return e.opts("key", "file://./k") },
			want: ErrInvalid, msg: "file:///<absolute clean path>"},
		{name: "unclean file key", opts: func(e *env) map[string]string { return e.opts("key", "file:///a/../k") },
			want: ErrInvalid, msg: "not clean"},
		{name: "encrypted random", opts: func(e *env) map[string]string { return e.opts("sourceType", "encrypted") },
			want: ErrInvalid, msg: "needs the key the device was formatted with"},
		{name: "unknown flag", flags: []string{"nosuid", "bind"}, want: ErrInvalid, msg: `unknown mount flag "bind"`},
		{name: "fs flag on device", opts: func(e *env) map[string]string { return e.opts("targetType", "device") },
			flags: []string{"nosuid"}, want: ErrInvalid, msg: `"nosuid" has no meaning for targetType "device"`},

		// Checks against the system.
		{name: "missing device", opts: func(e *env) map[string]string { return e.opts("devicePath", e.root+"/dev/nope") },
			want: ErrNoDevice, msg: "does not exist"},
		{name: "regular file device", opts: func(e *env) map[string]string { return e.opts("devicePath", e.mountinfo) },
			want: ErrInvalid, msg: "is not a block device"},
		{name: "unknown deviceId", opts: func(e *env) map[string]string { return e.opts("devicePath", "", "deviceId", "7:99") },
			want: ErrNoDevice, msg: "deviceId 7:99"},
		{name: "deviceId escapes /dev", setup: func(e *env) { e.writeSys("7:98", "DEVNAME=../../etc/passwd\n") },
			opts: func(e *env) map[string]string { return e.opts("devicePath", "", "deviceId", "7:98") },
			want: ErrNoDevice, msg: `DEVNAME "../../etc/passwd"`},
		{name: "deviceId without DEVNAME", setup: func(e *env) { e.writeSys("7:97", "MAJOR=7\n") },
			opts: func(e *env) map[string]string { return e.opts("devicePath", "", "deviceId", "7:97") },
			want: ErrNoDevice, msg: "has no DEVNAME"},
		{name: "deviceId stale node", setup: func(e *env) { e.writeSys("7:96", "DEVNAME=vdb\n") },
			opts: func(e *env) map[string]string { return e.opts("devicePath", "", "deviceId", "7:96") },
			want: ErrNoDevice, msg: "which is device 254:16"},
		{name: "deviceId and devicePath differ", setup: func(e *env) { e.addDevice("vdc", 254, 32) },
			opts: func(e *env) map[string]string { return e.opts("deviceId", "254:32") },
			want: ErrInvalid, msg: "are different devices"},
		{name: "mount point is a file", setup: func(e *env) { writeFile(e.t, e.mp("a"), "x") },
			want: ErrInvalid, msg: "not a directory"},
		{name: "mount point is a symlink", setup: func(e *env) {
			mkdir(e.t, filepath.Dir(e.mp("a")))
			if err := os.Symlink(e.root, e.mp("a")); err != nil {
				e.t.Fatal(err)
			}
		}, want: ErrInvalid, msg: "is a symlink"},
		{name: "device target exists", setup: func(e *env) { mkdir(e.t, e.mp("a")) },
			opts: func(e *env) map[string]string { return e.opts("targetType", "device") },
			want: ErrExists, msg: "mount point exists"},
		{name: "mount point mounted", setup: func(e *env) {
			mkdir(e.t, e.mp("a"))
			e.setMountinfo("22 1 254:0 / / rw - ext4 /dev/vda rw\n30 22 0:50 / " + e.mp("a") + " rw - tmpfs tmpfs rw\n")
		}, want: ErrExists, msg: "already a mount point (of tmpfs)"},
		{name: "device mounted", setup: func(e *env) {
			e.setMountinfo("22 1 254:0 / / rw - ext4 /dev/vda rw\n30 22 254:16 / /data rw - ext4 /dev/vdb rw\n")
		}, want: ErrExists, msg: "is mounted at /data"},
		{name: "device held", setup: func(e *env) { mkdir(e.t, filepath.Join(e.sysBlock, e.devID, "holders", "dm-0")) },
			want: ErrExists, msg: "is held by dm-0"},
		{name: "mapping exists", setup: func(e *env) { writeFile(e.t, e.mapper("m1"), "") },
			opts: func(e *env) map[string]string { return e.opts("mapperName", "m1") },
			want: ErrExists, msg: "mapping "},
		{name: "sealed without unsealer", opts: func(e *env) map[string]string { return e.opts("key", "sealed.x.y.z") },
			want: ErrNoKeySource, msg: "sealed secret", not: "x.y.z"},
		{name: "sealed with nil unsealer", cfg: Config{Unsealer: nilUnsealer},
			opts: func(e *env) map[string]string { return e.opts("key", "sealed.x.y.z") },
			want: ErrNoKeySource, msg: "no unsealer"},
		{name: "kbs without KBC", opts: func(e *env) map[string]string { return e.opts("key", "kbs:///default/key/1") },
			want: ErrNoKeySource, msg: "kbs:///default/key/1 but no KBC"},
		{name: "vetoed", cfg: Config{BeforeMount: func(string) error { return errors.New("not under /run/kata-containers") }},
			msg: "vetoed: not under /run/kata-containers"},
		{name: "unsealer fails", cfg: Config{Unsealer: &fakeUnsealer{err: sealed.ErrVerification}},
			opts: func(e *env) map[string]string { return e.opts("key", "sealed.a.b.c") },
			want: sealed.ErrVerification, msg: "get key (sealed secret)"},
		{name: "short formatting key", setup: func(e *env) { writeFile(e.t, e.root+"/key", "test") },
			opts: func(e *env) map[string]string { return e.opts("key", "file://"+e.root+"/key") },
			want: ErrInvalid, msg: "is 4 bytes; formatting needs at least 32"},
		{name: "empty key file", setup: func(e *env) { writeFile(e.t, e.root+"/key", "") },
			opts: func(e *env) map[string]string { return e.opts("key", "file://"+e.root+"/key") },
			want: ErrInvalid, msg: "is empty"},
		{name: "key file is a directory", setup: func(e *env) { mkdir(e.t, e.root+"/key") },
			opts: func(e *env) map[string]string { return e.opts("key", "file://"+e.root+"/key") },
			msg:  "is not a regular file"},
		{name: "missing key file",
			opts: func(e *env) map[string]string { return e.opts("key", "file://"+e.root+"/nokey") },
			want: os.ErrNotExist, msg: "get key (file://"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg)
			if tc.setup != nil {
				tc.setup(e)
			}
			vt := tc.vt
			if vt == "" {
				vt = VolumeType
			}
			opts := e.opts()
			if tc.opts != nil {
				opts = tc.opts(e)
			}
			mp := e.mp("a")
			if tc.mp != nil {
				mp = tc.mp(e)
			}
			before := mountPointState(mp)
			err := e.m.SecureMount(context.Background(), vt, opts, tc.flags, mp)
			if err == nil {
				t.Fatal("SecureMount succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("error %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not contain %q", err, tc.msg)
			}
			if tc.not != "" && strings.Contains(err.Error(), tc.not) {
				t.Errorf("error %q shows %q", err, tc.not)
			}
			if !strings.HasPrefix(err.Error(), "secure mount ") {
				t.Errorf("error %q does not name the operation", err)
			}
			if got := e.fake.Calls(); len(got) != 0 {
				t.Errorf("calls %q, want none", got)
			}
			if after := mountPointState(mp); after != before {
				t.Errorf("mount point changed: %s, was %s", after, before)
			}
			e.noHeaders()
			if v := e.m.Volumes(); len(v) != 0 {
				t.Errorf("volumes %+v", v)
			}
		})
	}
}

// mountPointState describes what is at p.
func mountPointState(p string) string {
	fi, err := os.Lstat(p)
	if err != nil {
		return "absent"
	}
	return fi.Mode().String()
}

func TestFlags(t *testing.T) {
	tests := []struct {
		flags    []string
		target   string
		want     uintptr
		readOnly bool
	}{
		{nil, targetFS, unix.MS_NOATIME, false},
		{[]string{"defaults"}, targetFS, unix.MS_NOATIME, false},
		{[]string{"ro", "nosuid", "nodev", "noexec"}, targetFS, unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC | unix.MS_NOATIME, true},
		{[]string{"ro", "rw"}, targetFS, unix.MS_NOATIME, false},
		{[]string{"nosuid", "suid", "noexec", "exec", "nodev", "dev"}, targetFS, unix.MS_NOATIME, false},
		{[]string{"relatime"}, targetFS, unix.MS_RELATIME, false},
		{[]string{"noatime", "strictatime"}, targetFS, unix.MS_STRICTATIME, false},
		{[]string{"strictatime", "noatime"}, targetFS, unix.MS_NOATIME, false},
		{[]string{"sync", "dirsync", "nodiratime", "lazytime"}, targetFS, unix.MS_SYNCHRONOUS | unix.MS_DIRSYNC | unix.MS_NODIRATIME | unix.MS_LAZYTIME | unix.MS_NOATIME, false},
		{[]string{"sync", "async", "lazytime", "nolazytime", "nodiratime", "diratime"}, targetFS, unix.MS_NOATIME, false},
		{[]string{"ro"}, targetDevice, 0, true},
		{[]string{"ro", "rw", "defaults"}, targetDevice, 0, false},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.flags, ",")+"/"+tc.target, func(t *testing.T) {
			r := &request{target: tc.target}
			if err := r.parseFlags(tc.flags); err != nil {
				t.Fatal(err)
			}
			if r.mountFlags != tc.want || r.readOnly != tc.readOnly {
				t.Errorf("flags %s ro=%v, want %s ro=%v", flagNames(r.mountFlags), r.readOnly, flagNames(tc.want), tc.readOnly)
			}
		})
	}
}

func TestMapperName(t *testing.T) {
	for _, ok := range []string{"a", "Z9", "data_1-x", strings.Repeat("b", 100), "luks-7d2f"} {
		if err := checkMapperName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "_a", "-", ".", "..", "a.b", "a/b", "a\x00", "control", "temporary-cryptsetup-x", strings.Repeat("b", 101), "a\n"} {
		if err := checkMapperName(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		}
	}
	a, b := DefaultMapperName("/run/a"), DefaultMapperName("/run/b")
	if a == b || len(a) != len("guestd-")+16 || !strings.HasPrefix(a, "guestd-") || checkMapperName(a) != nil {
		t.Errorf("DefaultMapperName: %q, %q", a, b)
	}
	if DefaultMapperName("/run/a") != a {
		t.Error("DefaultMapperName is not deterministic")
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		v    string
		want keySpec
	}{
		{"sealed.a.b.c", keySpec{kind: keySealed, sealed: "sealed.a.b.c"}},
		{"kbs:///default/key/1", keySpec{kind: keyKBS, uri: resource.URI{Plugin: "resource", Segments: []string{"default", "key", "1"}}}},
		{"kbs://kbs.example:8080/default/key/1", keySpec{kind: keyKBS, uri: resource.URI{Plugin: "resource", Host: "kbs.example:8080", Segments: []string{"default", "key", "1"}}}},
		{"kbs+vault://host/a/b", keySpec{kind: keyKBS, uri: resource.URI{Plugin: "vault", Host: "host", Segments: []string{"a", "b"}}}},
		{"file:///run/keys/disk", keySpec{kind: keyFile, path: "/run/keys/disk"}},
	}
	for _, tc := range tests {
		got, err := parseKey(map[string]string{"key": tc.v})
		if err != nil {
			t.Errorf("%q: %v", tc.v, err)
			continue
		}
		if got.kind != tc.want.kind || got.sealed != tc.want.sealed || got.path != tc.want.path ||
			got.uri.String() != tc.want.uri.String() && tc.want.kind == keyKBS {
			t.Errorf("%q: %+v, want %+v", tc.v, got, tc.want)
		}
	}
	got, err := parseKey(map[string]string{})
	if err != nil || got.kind != keyRandom || got.describe() != "random" {
		t.Errorf("no key: %+v, %v", got, err)
	}
	for _, bad := range []string{"", "sealed", "KBS:///a/b/c", "http://x/y", "file:/x", "file://host/x", "file://", "/etc/key", "passphrase"} {
		if _, err := parseKey(map[string]string{"key": bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", bad, err)
		} else if slices.Contains([]string{"http://x/y", "/etc/key", "passphrase"}, bad) && strings.Contains(err.Error(), bad) {
			t.Errorf("%q echoed in %q", bad, err)
		}
	}
}

func TestEagerInit(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "-E lazy_itable_init=0,lazy_journal_init=0"},
		{"-m 0", "-m 0 -E lazy_itable_init=0,lazy_journal_init=0"},
		{"-O ^has_journal -m 0 -i 163840 -I 128", "-O ^has_journal -m 0 -i 163840 -I 128 -E lazy_itable_init=0,lazy_journal_init=0"},
		{"-E nodiscard", "-E nodiscard,lazy_itable_init=0,lazy_journal_init=0"},
		{"-Enodiscard", "-Enodiscard,lazy_itable_init=0,lazy_journal_init=0"},
		{"-E a -m 0 -E b", "-E a -m 0 -E b,lazy_itable_init=0,lazy_journal_init=0"},
		{"-E lazy_itable_init=0", "-E lazy_itable_init=0,lazy_journal_init=0"},
		{"-E lazy_itable_init=0,lazy_journal_init=0", "-E lazy_itable_init=0,lazy_journal_init=0"},
	}
	for _, tc := range tests {
		in := strings.Fields(tc.in)
		got := strings.Join(eagerInit(in), " ")
		if got != tc.want {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
		if !slices.Equal(in, strings.Fields(tc.in)) {
			t.Errorf("%q: input modified", tc.in)
		}
	}
}
