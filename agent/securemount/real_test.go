package securemount

// Tests against the real cryptsetup, mke2fs and loop devices. The test
// host has no device-mapper, so "cryptsetup open" (and formatting with
// integrity, which activates dm-integrity to format it) cannot work here:
// there the tests check that the failure is reported and rolled back, and
// inspect what luksFormat wrote. On a kernel with device-mapper the same
// tests expect the whole mount to work. The full path runs in the QEMU
// guest of test/e2e.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
)

// need fails the test if a tool the real tests use is missing: make deps
// installs them, so a missing one is a setup error, not a skip.
func need(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := lookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run make deps (apt-get install -y %s)", name, pkg)
	}
	return p
}

// haveDM reports whether this kernel has device-mapper. Not by
// /dev/mapper/control: libdevmapper creates that node even when the
// kernel has no device-mapper.
func haveDM() bool {
	b, err := os.ReadFile("/proc/misc")
	return err == nil && strings.Contains(string(b), " device-mapper\n")
}

// loopDevice attaches a new sparse file of size bytes to a loop device,
// detached when the test ends.
func loopDevice(t *testing.T, size int64) (dev, file string) {
	t.Helper()
	losetup := need(t, "losetup", "mount")
	file = filepath.Join(t.TempDir(), "disk.img")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command(losetup, "--find", "--show", file).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command(losetup, "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	return dev, file
}

// cryptsetup runs the real cryptsetup for a check.
func cryptsetup(t *testing.T, stdin []byte, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, need(t, "cryptsetup", "cryptsetup-bin"), args...)
	c.Stdin = bytes.NewReader(stdin)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		err = fmt.Errorf("cryptsetup %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, err
}

// spySys is the real system, with a hook before each command.
type spySys struct {
	realSys
	before func(c cmd)
}

func (s spySys) run(ctx context.Context, c cmd) ([]byte, error) {
	if s.before != nil {
		s.before(c)
	}
	return s.realSys.run(ctx, c)
}

func realMounter(t *testing.T, cfg Config, before func(cmd)) *Mounter {
	t.Helper()
	cfg.HeaderDir = filepath.Join(t.TempDir(), "headers")
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return newMounter(cfg, spySys{realSys: realSys{log: cfg.Logger}, before: before})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// luksMeta is the LUKS2 JSON metadata the tests check.
type luksMeta struct {
	Keyslots map[string]struct {
		KeySize int `json:"key_size"`
		KDF     struct {
			Type       string `json:"type"`
			Hash       string `json:"hash"`
			Iterations int    `json:"iterations"`
		} `json:"kdf"`
	} `json:"keyslots"`
	Segments map[string]struct {
		Type       string `json:"type"`
		Offset     string `json:"offset"`
		Encryption string `json:"encryption"`
		SectorSize int    `json:"sector_size"`
		Integrity  *struct {
			Type string `json:"type"`
		} `json:"integrity"`
	} `json:"segments"`
}

// checkFormatted checks that header (a device or a detached header file)
// is LUKS2 as this package formats it.
func checkFormatted(t *testing.T, header, offset string, integrity bool) {
	t.Helper()
	if _, err := cryptsetup(t, nil, "isLuks", "--type", "luks2", header); err != nil {
		t.Fatalf("not LUKS2: %v", err)
	}
	js, err := cryptsetup(t, nil, "luksDump", "--dump-json-metadata", header)
	if err != nil {
		t.Fatal(err)
	}
	var h luksMeta
	if err := json.Unmarshal(js, &h); err != nil {
		t.Fatal(err)
	}
	s, ks := h.Segments["0"], h.Keyslots["0"]
	if len(h.Segments) != 1 || s.Type != "crypt" || s.Encryption != Cipher || s.SectorSize != SectorSize || s.Offset != offset {
		t.Errorf("segments %+v, want one crypt %s segment of %d-byte sectors at %s", h.Segments, Cipher, SectorSize, offset)
	}
	wantKey := KeyBits / 8
	if integrity {
		wantKey += 32 // the HMAC-SHA256 key
	}
	if len(h.Keyslots) != 1 || ks.KDF.Type != PBKDF || ks.KDF.Hash != PBKDFHash || ks.KDF.Iterations != PBKDFIterations || ks.KeySize != wantKey {
		t.Errorf("keyslots %+v, want one %s-%s %d keyslot for a %d-byte key", h.Keyslots, PBKDF, PBKDFHash, PBKDFIterations, wantKey)
	}
	if got := s.Integrity != nil && s.Integrity.Type == "hmac(sha256)"; got != integrity {
		t.Errorf("integrity %+v, want %v", s.Integrity, integrity)
	}
}

// isMounted reports whether mp is a mount point.
func isMounted(t *testing.T, mp string) bool {
	t.Helper()
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(mp))
	if err != nil {
		t.Fatal(err)
	}
	return len(ms) > 0
}

// TestRealFormat formats loop devices with the real cryptsetup through
// SecureMount and checks what it wrote.
func TestRealFormat(t *testing.T) {
	need(t, "cryptsetup", "cryptsetup-bin")
	need(t, "mkfs.ext4", "e2fsprogs")
	dm := haveDM()
	t.Logf("device-mapper available: %v", dm)
	tests := []struct {
		name      string
		random    bool
		integrity bool
	}{
		{name: "file key", random: false},
		{name: "random key, detached header", random: true},
		{name: "file key, integrity", integrity: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, _ := loopDevice(t, 64<<20)
			dir := t.TempDir()
			mp := filepath.Join(dir, "mnt", "vol")
			keyFile := filepath.Join(dir, "key")
			key := make([]byte, 64)
			rand.Read(key)
			writeFile(t, keyFile, string(key))
			var headerCopy string
			m := realMounter(t, Config{}, func(c cmd) {
				// Keep a copy of the detached header before open: it is
				// removed right after.
				if h := slices.Index(c.args, "--header"); h >= 0 && slices.Contains(c.args, "open") {
					b, err := os.ReadFile(c.args[h+1])
					if err != nil {
						t.Errorf("read header: %v", err)
					}
					headerCopy = filepath.Join(dir, "header.copy")
					writeFile(t, headerCopy, string(b))
				}
			})
			name := fmt.Sprintf("guestd-test-%d-%d", os.Getpid(), i)
			opts := map[string]string{
				"devicePath": dev, "sourceType": "empty", "encryptionType": "luks2",
				"targetType": "fileSystem", "mapperName": name,
				"dataIntegrity": fmt.Sprint(tc.integrity),
			}
			if !tc.random {
				opts["key"] = "file://" + keyFile
			}
			err := m.SecureMount(context.Background(), VolumeType, opts, []string{"nosuid", "nodev"}, mp)
			switch {
			case dm && err != nil:
				t.Fatal(err)
			case dm:
				if !isMounted(t, mp) {
					t.Error("not mounted")
				}
				if out, err := cryptsetup(t, nil, "status", name); err != nil || !strings.Contains(string(out), Cipher) {
					t.Errorf("cryptsetup status: %s, %v", out, err)
				}
				if err := m.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
				if isMounted(t, mp) {
					t.Error("still mounted after Close")
				}
				if _, err := os.Stat("/dev/mapper/" + name); err == nil {
					t.Error("mapping still open after Close")
				}
			default:
				// No device-mapper: integrity fails at luksFormat (it
				// formats dm-integrity through a temporary mapping), the
				// rest at open. Either way the error says so and nothing
				// is left.
				step := "open " + dev + " as " + name
				if tc.integrity {
					step = "format " + dev + " as LUKS2"
				}
				if err == nil || !strings.Contains(err.Error(), step) || !strings.Contains(err.Error(), "device-mapper") {
					t.Fatalf("error %v, want one from %q mentioning device-mapper", err, step)
				}
				t.Logf("expected failure: %v", err)
			}
			if _, err := os.Lstat(filepath.Join(dir, "mnt")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("mount point left behind: %v", err)
			}
			if ents, _ := os.ReadDir(m.cfg.HeaderDir); len(ents) != 0 {
				t.Errorf("headers left behind: %v", ents)
			}
			if v := m.Volumes(); len(v) != 0 {
				t.Errorf("volumes %+v", v)
			}
			switch {
			case tc.random:
				// The header never touched the device.
				if _, err := cryptsetup(t, nil, "isLuks", dev); err == nil {
					t.Error("an ephemeral volume's header is on the device")
				}
				if headerCopy == "" {
					t.Fatal("open had no --header")
				}
				checkFormatted(t, headerCopy, "0", false)
			case tc.integrity && !dm:
				// Nothing to check: luksFormat stopped at dm-integrity.
			default:
				checkFormatted(t, dev, "16777216", tc.integrity)
				// The key went through stdin unchanged: the file opens the
				// keyslot.
				if _, err := cryptsetup(t, nil, "open", "--test-passphrase", "--key-file", keyFile, dev); err != nil {
					t.Errorf("the key file does not open the keyslot: %v", err)
				}
			}
		})
	}
}

// TestRealEncrypted opens devices formatted by hand, as a tenant would.
func TestRealEncrypted(t *testing.T) {
	need(t, "cryptsetup", "cryptsetup-bin")
	dm := haveDM()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "key")
	writeFile(t, keyFile, "passphrase\n") // upstream's example: echo passphrase > key
	tests := []struct {
		name      string
		format    []string // cryptsetup luksFormat arguments, nil for none
		integrity string
		want      error
		msg       string
	}{
		{name: "blank device", want: ErrNotLUKS2, msg: "has no LUKS2 header"},
		{name: "LUKS1", format: []string{"--type", "luks1"}, want: ErrNotLUKS2, msg: "has no LUKS2 header"},
		{name: "LUKS2 without integrity asked for integrity", format: []string{"--type", "luks2"}, integrity: "true",
			want: ErrNotLUKS2, msg: "no keyed integrity"},
		{name: "LUKS2", format: []string{"--type", "luks2", "--sector-size", "4096"}, integrity: "false"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, _ := loopDevice(t, 32<<20)
			if tc.format != nil {
				args := append([]string{"--batch-mode", "luksFormat", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", keyFile}, tc.format...)
				if _, err := cryptsetup(t, nil, append(args, dev)...); err != nil {
					t.Fatal(err)
				}
			}
			mp := filepath.Join(dir, fmt.Sprint(i), "vol")
			name := fmt.Sprintf("guestd-test-%d-enc%d", os.Getpid(), i)
			m := realMounter(t, Config{}, nil)
			opts := map[string]string{
				"devicePath": dev, "sourceType": "encrypted", "encryptionType": "luks2",
				"targetType": "device", "mapperName": name, "key": "file://" + keyFile,
			}
			if tc.integrity != "" {
				opts["dataIntegrity"] = tc.integrity
			}
			err := m.SecureMount(context.Background(), VolumeType, opts, nil, mp)
			switch {
			case tc.want != nil:
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("error %v, want %v with %q", err, tc.want, tc.msg)
				}
			case dm:
				if err != nil {
					t.Fatal(err)
				}
				if l, err := os.Readlink(mp); err != nil || l != "/dev/mapper/"+name {
					t.Errorf("symlink: %q, %v", l, err)
				}
				if err := m.Close(context.Background()); err != nil {
					t.Fatal(err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), "open "+dev) || !strings.Contains(err.Error(), "device-mapper") {
					t.Fatalf("error %v, want an open failure mentioning device-mapper", err)
				}
			}
			if _, err := os.Lstat(filepath.Dir(mp)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("left behind: %v", err)
			}
		})
	}
}

// TestRealMke2fs checks the parse of "mke2fs -n" against the mke2fs
// installed, through the real runner.
func TestRealMke2fs(t *testing.T) {
	need(t, "mkfs.ext4", "e2fsprogs")
	tests := []struct {
		size int64
		want []int64
	}{
		{600 << 20, []int64{32768 * 4096, 98304 * 4096}},
		{100 << 20, nil},
		{20 << 30, []int64{32768 * 4096, 98304 * 4096, 163840 * 4096, 229376 * 4096, 294912 * 4096,
			819200 * 4096, 884736 * 4096, 1605632 * 4096, 2654208 * 4096, 4096000 * 4096}},
	}
	for _, tc := range tests {
		f := filepath.Join(t.TempDir(), "fs.img")
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, tc.size); err != nil {
			t.Fatal(err)
		}
		out, err := realSys{log: slog.New(slog.DiscardHandler)}.run(context.Background(), cmd{name: "mkfs.ext4", args: []string{"-F", "-n", "-b", "4096", f}})
		if err != nil {
			t.Fatal(err)
		}
		got, err := superblockOffsets(string(out))
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("%d bytes: %v, %v; want %v\n%s", tc.size, got, err, tc.want, out)
		}
	}
}

// TestRealSys checks the real seam: exit codes and standard error in
// errors, the key on stdin, the sbin fallback, zeroing.
func TestRealSys(t *testing.T) {
	need(t, "cryptsetup", "cryptsetup-bin")
	s := realSys{log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()

	t.Setenv("PATH", "/nonexistent") // found in /usr/sbin or /sbin all the same
	_, err := s.run(ctx, cmd{name: "cryptsetup", args: []string{"isLuks", "/nonexistent/dev"}})
	if exitCode(err) != 4 || !strings.Contains(err.Error(), "cryptsetup isLuks /nonexistent/dev: exit status 4: Device /nonexistent/dev does not exist") {
		t.Errorf("error %v (exit code %d)", err, exitCode(err))
	}
	if _, err := s.run(ctx, cmd{name: "no-such-tool"}); err == nil || !strings.Contains(err.Error(), "no-such-tool not found in PATH or /usr/sbin") {
		t.Errorf("missing tool: %v", err)
	}
	out, err := s.run(ctx, cmd{name: "cat", stdin: []byte("key\x00bytes\n")})
	if err != nil || string(out) != "key\x00bytes\n" {
		t.Errorf("stdin: %q, %v", out, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.run(cctx, cmd{name: "sleep", args: []string{"10"}}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}

	f := filepath.Join(t.TempDir(), "dev")
	writeFile(t, f, strings.Repeat("x", 3*SectorSize))
	if err := s.zero(f, []int64{0, 2 * SectorSize}, SectorSize); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(f)
	want := string(make([]byte, SectorSize)) + strings.Repeat("x", SectorSize) + string(make([]byte, SectorSize))
	if string(b) != want {
		t.Error("zero wrote the wrong blocks")
	}
}
