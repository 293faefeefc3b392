// Tests for package sev.
//
// The real efi_secret driver cannot run here: it needs an SEV or SEV-ES
// guest whose firmware received a launch secret. The tests stand a fake
// secrets directory up in t.TempDir() (a plain directory and file, so
// "unlink wipes the secret" is only observed as the file disappearing), and
// replace mounting securityfs and running modprobe with a fake system that
// records its calls.
package sev

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/resource"
)

var _ kbc.Client = (*KBC)(nil)

const secretValue = "U0VDUkVULVZBTFVF" // base64 of SECRET-VALUE in the bad fixtures

// fakeArea returns a root directory holding fixture as the keys entry.
func fakeArea(t *testing.T, fixture string) (root, file string) {
	t.Helper()
	root = filepath.Join(t.TempDir(), "secrets", "coco")
	if err := os.MkdirAll(root, 0o750); err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(root, KeysGUID)
	if fixture != "" {
		data, err := os.ReadFile(filepath.Join("testdata", fixture))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, data, 0o440); err != nil {
			t.Fatal(err)
		}
	}
	return root, file
}

func mustURI(t *testing.T, s string) resource.URI {
	t.Helper()
	u, err := resource.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func TestGetResource(t *testing.T) {
	root, file := fakeArea(t, "keys.json")
	k, err := New(context.Background(), Options{Root: root, NoSetup: true})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if exists(file) {
		t.Fatal("secret entry still present after New; it must be unlinked")
	}
	for _, tc := range []struct {
		uri  string
		want []byte
	}{
		{"kbs:///default/key/key_id1", []byte("passphrasewhichneedstobe32bytes!")},
		{"kbs://host.ignored:1/default/key/key_id1", []byte("passphrasewhichneedstobe32bytes!")},
		{"kbs:///default/image-kek/abc", []byte{
			0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
			0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
		}},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			got, err := k.GetResource(context.Background(), mustURI(t, tc.uri))
			if err != nil {
				t.Fatalf("GetResource: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("got %x, want %x", got, tc.want)
			}
			clear(got) // the caller's copy; the KBC's must survive
			again, err := k.GetResource(context.Background(), mustURI(t, tc.uri))
			if err != nil || !bytes.Equal(again, tc.want) {
				t.Fatalf("after clearing the returned slice: %x, %v", again, err)
			}
		})
	}

	// The entry was consumed: a second KBC this "boot" finds nothing.
	_, err = New(context.Background(), Options{Root: root, NoSetup: true})
	if !errors.Is(err, ErrNoSecret) || !strings.Contains(err.Error(), "already read") {
		t.Fatalf("second New: %v, want ErrNoSecret", err)
	}
}

func TestGetResourceErrors(t *testing.T) {
	root, file := fakeArea(t, "keys.json")
	k, err := New(context.Background(), Options{Root: root, NoSetup: true})
	if err != nil {
		t.Fatal(err)
	}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		uri  resource.URI
		is   error
		want []string
	}{
		{"unknown key", context.Background(), mustURI(t, "kbs:///default/key/nope"), ErrNotFound,
			[]string{"default/key/nope", file}},
		{"other plugin", context.Background(), mustURI(t, "kbs+pkcs11:///default/key/key_id1"), nil,
			[]string{`plugin "pkcs11" not supported`}},
		{"invalid URI", context.Background(), resource.URI{Plugin: "resource", Segments: []string{"key_id1"}}, nil,
			[]string{"exactly 3 path segments"}},
		{"canceled", canceled, mustURI(t, "kbs:///default/key/key_id1"), context.Canceled, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.GetResource(tc.ctx, tc.uri)
			if err == nil {
				t.Fatalf("GetResource = %x, want error", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "passphrase") || strings.Contains(err.Error(), "cGFzc3Bo") {
				t.Errorf("error %q leaks a key", err)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		fixture string // "" for no entry
		noArea  bool
		is      error
		want    []string
	}{
		{name: "no secret area", noArea: true, is: ErrNoSecretArea,
			want: []string{"EFI secret area not present", "efi_secret not loaded"}},
		{name: "no entry", is: ErrNoSecret,
			want: []string{KeysGUID, "no secret with GUID"}},
		{name: "bad base64", fixture: "bad-base64.json", is: ErrMalformed,
			want: []string{`entry "default/key/2": value is not standard base64`, KeysGUID}},
		{name: "bad syntax", fixture: "bad-syntax.json", is: ErrMalformed,
			want: []string{"invalid JSON at byte", KeysGUID}},
		{name: "non-string", fixture: "non-string.json", is: ErrMalformed,
			want: []string{`entry "default/key/1" is not a JSON string`}},
		{name: "not an object", fixture: "not-object.json", is: ErrMalformed,
			want: []string{"not a JSON object"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root, file := fakeArea(t, tc.fixture)
			if tc.noArea {
				root = filepath.Join(root, "missing")
			}
			k, err := New(context.Background(), Options{Root: root, NoSetup: true})
			if err == nil {
				t.Fatalf("New = %+v, want error", k)
			}
			if k != nil {
				t.Errorf("New returned a KBC with its error")
			}
			if !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secretValue) || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q leaks the secret", err)
			}
			if tc.fixture != "" && exists(file) {
				t.Errorf("a malformed secret must still be unlinked")
			}
		})
	}
}

func TestOversizedSecret(t *testing.T) {
	root, file := fakeArea(t, "")
	if err := os.WriteFile(file, bytes.Repeat([]byte{' '}, MaxSecretSize+1), 0o440); err != nil {
		t.Fatal(err)
	}
	_, err := New(context.Background(), Options{Root: root, NoSetup: true})
	if err == nil || !strings.Contains(err.Error(), "larger than the 64 KiB limit") {
		t.Fatalf("error = %v, want the size limit", err)
	}
	if exists(file) {
		t.Error("an oversized secret must still be unlinked")
	}
}

func TestClose(t *testing.T) {
	root, _ := fakeArea(t, "keys.json")
	k, err := New(context.Background(), Options{Root: root, NoSetup: true})
	if err != nil {
		t.Fatal(err)
	}
	held := k.keys["default/key/key_id1"]
	if err := k.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(held, make([]byte, len(held))) {
		t.Errorf("Close left key bytes %x, want zeroes", held)
	}
	if _, err := k.GetResource(context.Background(), mustURI(t, "kbs:///default/key/key_id1")); !errors.Is(err, ErrClosed) {
		t.Errorf("GetResource after Close: %v, want ErrClosed", err)
	}
}

// fakeSystem simulates securityfs and efi_secret. mountShows and
// modprobeShows say whether the secret area appears after mounting or after
// loading the module (it is then created with the keys fixture).
type fakeSystem struct {
	t             *testing.T
	root          string
	mounted       bool
	statErr       error
	mountErr      error
	mountShows    bool
	loadErr       error
	loadShows     bool
	unloadErr     error
	unloadCtxDone bool // set if "modprobe -r" got a done context
	calls         []string
}

func (f *fakeSystem) show() {
	if err := os.MkdirAll(f.root, 0o750); err != nil {
		f.t.Fatal(err)
	}
	data, err := os.ReadFile("testdata/keys.json")
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.root, KeysGUID), data, 0o440); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fakeSystem) securityFSMounted(dir string) (bool, error) {
	f.calls = append(f.calls, "statfs "+dir)
	return f.mounted, f.statErr
}

func (f *fakeSystem) mountSecurityFS(dir string) error {
	f.calls = append(f.calls, "mount "+dir)
	if f.mountErr != nil {
		return f.mountErr
	}
	if f.mountShows {
		f.show()
	}
	return nil
}

func (f *fakeSystem) modprobe(ctx context.Context, args ...string) error {
	f.calls = append(f.calls, "modprobe "+strings.Join(args, " "))
	if len(args) > 0 && args[0] == "-r" {
		f.unloadCtxDone = ctx.Err() != nil
		return f.unloadErr
	}
	if f.loadErr != nil {
		return f.loadErr
	}
	if f.loadShows {
		f.show()
	}
	return nil
}

func TestSetup(t *testing.T) {
	const (
		statfs = "statfs /sys/kernel/security"
		mount  = "mount /sys/kernel/security"
		load   = "modprobe efi_secret"
		unload = "modprobe -r efi_secret"
	)
	boom := errors.New("boom")
	for _, tc := range []struct {
		name      string
		present   bool // the area exists before New
		noSetup   bool
		sys       fakeSystem
		wantCalls []string
		is        error
		wantErr   string // "" for success
	}{
		{name: "area present: nothing to do", present: true, wantCalls: nil},
		{name: "NoSetup with no area", noSetup: true, wantCalls: nil,
			is: ErrNoSecretArea, wantErr: "not present"},
		{name: "securityfs mounted, module loaded and unloaded",
			sys:       fakeSystem{mounted: true, loadShows: true},
			wantCalls: []string{statfs, load, unload}},
		{name: "mount reveals a built-in driver",
			sys:       fakeSystem{mountShows: true},
			wantCalls: []string{statfs, mount}},
		{name: "mount then load",
			sys:       fakeSystem{loadShows: true},
			wantCalls: []string{statfs, mount, load, unload}},
		{name: "statfs fails",
			sys:       fakeSystem{statErr: boom},
			wantCalls: []string{statfs}, is: boom, wantErr: "check securityfs at /sys/kernel/security"},
		{name: "mount fails",
			sys:       fakeSystem{mountErr: boom},
			wantCalls: []string{statfs, mount}, is: boom, wantErr: "mount securityfs at /sys/kernel/security"},
		{name: "load fails, nothing to unload",
			sys:       fakeSystem{mounted: true, loadErr: boom},
			wantCalls: []string{statfs, load}, is: boom, wantErr: "absent and loading efi_secret failed"},
		{name: "module loads but no area appears",
			sys:       fakeSystem{mounted: true},
			wantCalls: []string{statfs, load, unload}, is: ErrNoSecretArea, wantErr: "not present"},
		{name: "unload fails: keys discarded",
			sys:       fakeSystem{mounted: true, loadShows: true, unloadErr: boom},
			wantCalls: []string{statfs, load, unload}, is: boom, wantErr: "unload efi_secret after reading"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "secrets", "coco")
			sys := tc.sys
			sys.t, sys.root = t, root
			if tc.present {
				sys.show()
			}
			k, err := newKBC(context.Background(), Options{Root: root, NoSetup: tc.noSetup}, &sys)
			if !reflect.DeepEqual(sys.calls, tc.wantCalls) {
				t.Errorf("calls = %q, want %q", sys.calls, tc.wantCalls)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("error %v is not %v", err, tc.is)
				}
				if k != nil {
					t.Errorf("New returned a KBC with its error")
				}
				if exists(filepath.Join(root, KeysGUID)) {
					t.Errorf("secret entry left readable")
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			got, err := k.GetResource(context.Background(), mustURI(t, "kbs:///default/key/key_id1"))
			if err != nil || string(got) != "passphrasewhichneedstobe32bytes!" {
				t.Fatalf("GetResource = %q, %v", got, err)
			}
			if exists(filepath.Join(root, KeysGUID)) {
				t.Errorf("secret entry not unlinked")
			}
		})
	}
}

// TestUnloadDespiteCanceledContext checks the module loaded for New is
// unloaded even when New's context is canceled meanwhile.
func TestUnloadDespiteCanceledContext(t *testing.T) {
	root := filepath.Join(t.TempDir(), "coco")
	ctx, cancel := context.WithCancel(context.Background())
	sys := &fakeSystem{t: t, root: root, mounted: true}
	sys.loadShows = true
	// Cancel once the module is loaded, before the unload.
	wrapped := &cancelAfterLoad{fakeSystem: sys, cancel: cancel}
	if _, err := newKBC(ctx, Options{Root: root}, wrapped); err != nil {
		t.Fatalf("New: %v", err)
	}
	if len(sys.calls) != 3 || sys.calls[2] != "modprobe -r efi_secret" {
		t.Fatalf("calls = %q, want the unload last", sys.calls)
	}
	if sys.unloadCtxDone {
		t.Error("unload ran with a canceled context")
	}
}

type cancelAfterLoad struct {
	*fakeSystem
	cancel context.CancelFunc
}

func (c *cancelAfterLoad) modprobe(ctx context.Context, args ...string) error {
	err := c.fakeSystem.modprobe(ctx, args...)
	if len(args) == 1 {
		c.cancel()
	}
	return err
}

func TestConcurrent(t *testing.T) {
	root, _ := fakeArea(t, "keys.json")
	k, err := New(context.Background(), Options{Root: root, NoSetup: true})
	if err != nil {
		t.Fatal(err)
	}
	uri := mustURI(t, "kbs:///default/key/key_id1")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if got, err := k.GetResource(context.Background(), uri); err != nil && !errors.Is(err, ErrClosed) {
				t.Error(err)
			} else if err == nil && string(got) != "passphrasewhichneedstobe32bytes!" {
				t.Errorf("got %q", got)
			}
		})
	}
	wg.Go(func() { k.Close() })
	wg.Wait()
}
