package securemount

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// stdins returns copies of the keys the commands got, in order.
func (e *env) stdins() [][]byte {
	e.t.Helper()
	e.fake.mu.Lock()
	defer e.fake.mu.Unlock()
	return e.fake.stdins
}

// TestKBSKey fetches the key from the real test KBS through the real KBS
// client (sample attester): it reaches cryptsetup's stdin unchanged and
// is zeroed afterwards. A missing resource fails before any command.
func TestKBSKey(t *testing.T) {
	repo := t.TempDir()
	key := make([]byte, 64)
	rand.Read(key)
	writeFile(t, filepath.Join(repo, "default/disk/1"), string(key))
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(),
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	client, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{KBC: client})
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("key", "kbs:///default/disk/1"), nil, e.mp("a")); err != nil {
		t.Fatal(err)
	}
	in := e.stdins()
	if len(in) != 2 || !bytes.Equal(in[0], key) || !bytes.Equal(in[1], key) {
		t.Errorf("cryptsetup got %d keys, want the KBS resource twice", len(in))
	}
	e.keysZeroed()

	e2 := newEnv(t, Config{KBC: client})
	mp := e2.mp("b")
	err = e2.m.SecureMount(context.Background(), VolumeType, e2.opts("key", "kbs:///default/disk/missing"), nil, mp)
	if _, ok := errors.AsType[*kbs.Error](err); !ok || !strings.Contains(err.Error(), "get key (kbs:///default/disk/missing)") {
		t.Errorf("missing resource: %v", err)
	}
	e2.untouched(mp)
}

func TestSealedKey(t *testing.T) {
	u := &fakeUnsealer{}
	e := newEnv(t, Config{Unsealer: u})
	secret := "sealed." + strings.Repeat("x", 48)
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("key", secret), nil, e.mp("a")); err != nil {
		t.Fatal(err)
	}
	if len(u.got) != 1 || u.got[0] != secret {
		t.Errorf("unsealer got %q", u.got)
	}
	in := e.stdins()
	if len(in) != 2 || string(in[0]) != strings.Repeat("x", 48) {
		t.Errorf("cryptsetup got %q", in)
	}
	e.keysZeroed()
}

// TestFileKey: the file's bytes, trailing newline included, are the key,
// as with cryptsetup --key-file; a short one may open but not format.
func TestFileKey(t *testing.T) {
	e := newEnv(t, Config{})
	e.fake.out["cryptsetup luksDump"] = readTestdata(t, "luks2-plain.json")
	p := e.root + "/key"
	writeFile(t, p, "passphrase\n")
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("sourceType", "encrypted", "key", "file://"+p), nil, e.mp("a")); err != nil {
		t.Fatal(err)
	}
	if in := e.stdins(); len(in) != 1 || string(in[0]) != "passphrase\n" {
		t.Errorf("cryptsetup got %q", in)
	}
	e.keysZeroed()

	// A symlinked key file (Kubernetes secret volumes) is fine.
	long := strings.Repeat("0123456789abcdef", 4)
	writeFile(t, e.root+"/real-key", long)
	if err := os.Symlink(e.root+"/real-key", e.root+"/link-key"); err != nil {
		t.Fatal(err)
	}
	vdc := e.addDevice("vdc", 254, 32)
	e.fake.stdins = nil
	if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("devicePath", vdc, "key", "file://"+e.root+"/link-key"), nil, e.mp("b")); err != nil {
		t.Fatal(err)
	}
	if in := e.stdins(); len(in) != 2 || string(in[0]) != long {
		t.Errorf("cryptsetup got %q", in)
	}
}

// TestRandomKey: 4096 random bytes, new for every volume.
func TestRandomKey(t *testing.T) {
	e := newEnv(t, Config{})
	vdc := e.addDevice("vdc", 254, 32)
	for i, d := range []string{e.dev, vdc} {
		if err := e.m.SecureMount(context.Background(), VolumeType, e.opts("devicePath", d), nil, e.mp(string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	in := e.stdins()
	if len(in) != 4 {
		t.Fatalf("%d keys", len(in))
	}
	for i, k := range in {
		if len(k) != randomKeySize || bytes.Equal(k, make([]byte, randomKeySize)) {
			t.Errorf("key %d: %d bytes, zero %v", i, len(k), bytes.Equal(k, make([]byte, len(k))))
		}
	}
	if !bytes.Equal(in[0], in[1]) || bytes.Equal(in[0], in[2]) {
		t.Error("format and open must share a key, and volumes must not")
	}
	e.keysZeroed()
}
