package offline

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/guestd/guestd/kbc/internal/secretmap"

	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/resource"
)

var _ kbc.Client = (*KBC)(nil)

const (
	keysFixture      = "testdata/aa-offline_fs_kbc-keys.json"
	resourcesFixture = "testdata/aa-offline_fs_kbc-resources.json"
)

func mustURI(t *testing.T, s string) resource.URI {
	t.Helper()
	u, err := resource.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestUpstreamFixtures looks resources up in upstream's sample files.
// Expected values were computed independently (python base64 + sha256).
func TestUpstreamFixtures(t *testing.T) {
	k := New(Options{KeysFile: keysFixture, ResourcesFile: resourcesFixture})
	for _, tc := range []struct {
		uri    string
		size   int
		sha256 string
		prefix string
	}{
		{"kbs:///default/key/key_id1", 32, "730a6e18ee1e6de0b7edf0da1d658c1b75c176001346f2fd5a6750d0ccf6c8af", "\x44\x45\xf0\x4c\x27\x02\x14\xe6"},
		{"kbs:///default/key/ssh-demo", 32, "a47499b7fdbb506fc0c9efcd923c37794344222baa4889532410f28996333106", "\x1d\x49\x4e\xbb"},
		{"kbs://ignored.example:8080/default/key/ssh-demo", 32, "a47499b7fdbb506fc0c9efcd923c37794344222baa4889532410f28996333106", "\x1d\x49\x4e\xbb"},
		{"kbs:///default/security-policy/test", 1178, "df0855b1e3a3948d4c04bf195b4acbee89d3f46423b6a1cf317c6057eda5e8fb", "{\n    \"default\": ["},
		{"kbs:///default/cosign-public-key/test", 177, "7bc6d528e5480ad1602bdc3fa9f62b051fd96f91054dce29ba93ec75a8a70662", "-----BEGIN PUBLIC KEY-----"},
		{"kbs:///default/credential/test", 217, "a441669b79bb671ec105106f24500f81699cd61356eba8dc4e2d9263a5dfcd2e", "{\n    \"auths\""},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			got, err := k.GetResource(context.Background(), mustURI(t, tc.uri))
			if err != nil {
				t.Fatalf("GetResource: %v", err)
			}
			if len(got) != tc.size || sum(got) != tc.sha256 || !bytes.HasPrefix(got, []byte(tc.prefix)) {
				t.Fatalf("got %d bytes sha256 %s prefix %q; want %d bytes sha256 %s prefix %q",
					len(got), sum(got), got[:min(len(got), 16)], tc.size, tc.sha256, tc.prefix)
			}
		})
	}
}

func TestGetResourceErrors(t *testing.T) {
	dir := t.TempDir()
	absent := filepath.Join(dir, "absent.json")
	for _, tc := range []struct {
		name    string
		opts    Options
		uri     resource.URI
		is      error    // errors.Is target, nil for none
		want    []string // substrings of the error
		notWant []string // must not appear (secrets)
	}{
		{
			name: "not found names path and files",
			opts: Options{KeysFile: keysFixture, ResourcesFile: resourcesFixture},
			uri:  mustURI(t, "kbs:///default/key/nope"),
			is:   ErrNotFound,
			want: []string{"default/key/nope", keysFixture, resourcesFixture},
			// Values from the fixtures.
			notWant: []string{"REXwTCcCFObQdE9ZfL0a", "ewogICAg"},
		},
		{
			name: "missing files are skipped and reported absent",
			opts: Options{KeysFile: absent, ResourcesFile: absent + "2"},
			uri:  mustURI(t, "kbs:///default/key/key_id1"),
			is:   ErrNotFound,
			want: []string{absent + " (absent)", absent + "2 (absent)"},
		},
		{
			name: "other plugins are refused",
			opts: Options{KeysFile: keysFixture},
			uri:  mustURI(t, "kbs+pkcs11:///default/key/key_id1"),
			want: []string{`plugin "pkcs11" not supported`},
		},
		{
			name: "invalid hand-built URI",
			opts: Options{KeysFile: keysFixture},
			uri:  resource.URI{Plugin: "resource", Segments: []string{"default", "..", "key_id1"}},
			want: []string{`".."`},
		},
		{
			name:    "bad base64 names key and file",
			opts:    Options{KeysFile: keysFixture, ExtraFiles: []string{"testdata/bad-base64.json"}},
			uri:     mustURI(t, "kbs:///default/key/good"),
			is:      ErrMalformed,
			want:    []string{`"default/key/bad"`, "testdata/bad-base64.json", "not standard base64"},
			notWant: []string{"U0VDUkVULVZBTFVF", "SECRET"},
		},
		{
			name:    "bad JSON syntax",
			opts:    Options{KeysFile: "testdata/bad-syntax.json"},
			uri:     mustURI(t, "kbs:///default/key/1"),
			is:      ErrMalformed,
			want:    []string{"testdata/bad-syntax.json", "invalid JSON at byte"},
			notWant: []string{"U0VDUkVULVZBTFVF", "SECRET"},
		},
		{
			name:    "not an object",
			opts:    Options{KeysFile: "testdata/not-object.json"},
			uri:     mustURI(t, "kbs:///default/key/1"),
			is:      ErrMalformed,
			want:    []string{"testdata/not-object.json", "not a JSON object"},
			notWant: []string{"U0VDUkVULVZBTFVF"},
		},
		{
			name: "non-string value",
			opts: Options{KeysFile: "testdata/non-string.json"},
			uri:  mustURI(t, "kbs:///default/key/1"),
			is:   ErrMalformed,
			want: []string{`entry "default/key/1" is not a JSON string`},
		},
		{
			name: "null value",
			opts: Options{KeysFile: "testdata/null-value.json"},
			uri:  mustURI(t, "kbs:///default/key/1"),
			is:   ErrMalformed,
			want: []string{`entry "default/key/1" is not a JSON string`},
		},
		{
			name: "unreadable file is an error, not skipped",
			opts: Options{KeysFile: dir, ResourcesFile: resourcesFixture},
			uri:  mustURI(t, "kbs:///default/credential/test"),
			want: []string{"read resource file", dir},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(tc.opts).GetResource(context.Background(), tc.uri)
			if err == nil {
				t.Fatalf("GetResource = %q, want error", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error %q leaks %q", err, w)
				}
			}
		})
	}
}

func TestFileOrderAndEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		uri  string
		want string
	}{
		{
			name: "extra file overrides keys file",
			opts: Options{KeysFile: keysFixture, ResourcesFile: resourcesFixture, ExtraFiles: []string{"testdata/override.json"}},
			uri:  "kbs:///default/key/key_id1",
			want: "overridden",
		},
		{
			name: "entry only in extra file",
			opts: Options{KeysFile: keysFixture, ExtraFiles: []string{"testdata/override.json"}},
			uri:  "kbs:///default/key/extra",
			want: "extra",
		},
		{
			name: "later extra file wins over earlier one",
			opts: Options{KeysFile: "testdata/override.json", ExtraFiles: []string{keysFixture}},
			uri:  "kbs:///default/key/extra",
			want: "extra",
		},
		{
			name: "line-wrapped base64",
			opts: Options{KeysFile: "testdata/wrapped.json"},
			uri:  "kbs:///default/key/wrapped",
			want: "wrapped base64 value",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := New(tc.opts).GetResource(context.Background(), mustURI(t, tc.uri))
			if err != nil {
				t.Fatalf("GetResource: %v", err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRereadsFiles checks the per-request loading: a file created or
// changed after New is seen by the next call.
func TestRereadsFiles(t *testing.T) {
	f := filepath.Join(t.TempDir(), "res.json")
	k := New(Options{KeysFile: f, ResourcesFile: f + ".absent"})
	uri := mustURI(t, "kbs:///r/t/g")
	ctx := context.Background()

	if _, err := k.GetResource(ctx, uri); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before the file exists: %v, want ErrNotFound", err)
	}
	for _, v := range []struct{ b64, want string }{{"b25l", "one"}, {"dHdv", "two"}} {
		if err := os.WriteFile(f, []byte(`{"r/t/g":"`+v.b64+`"}`), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := k.GetResource(ctx, uri)
		if err != nil || string(got) != v.want {
			t.Fatalf("GetResource = %q, %v; want %q", got, err, v.want)
		}
	}
}

func TestSizeLimit(t *testing.T) {
	f := filepath.Join(t.TempDir(), "big.json")
	fh, err := os.Create(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := fh.Truncate(MaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	_, err = New(Options{KeysFile: f}).GetResource(context.Background(), mustURI(t, "kbs:///a/b/c"))
	if err == nil || !errors.Is(err, secretmap.ErrTooLarge) || !strings.Contains(err.Error(), f) {
		t.Fatalf("error = %v, want the size limit naming %s", err, f)
	}

	// Exactly at the limit is read (and then fails as JSON, not on size).
	if err := os.Truncate(f, MaxFileSize); err != nil {
		t.Fatal(err)
	}
	_, err = New(Options{KeysFile: f}).GetResource(context.Background(), mustURI(t, "kbs:///a/b/c"))
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("at the limit: error = %v, want ErrMalformed", err)
	}
}

func TestContextCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := New(Options{KeysFile: keysFixture}).GetResource(ctx, mustURI(t, "kbs:///default/key/key_id1"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
}

func TestConcurrent(t *testing.T) {
	k := New(Options{KeysFile: keysFixture, ResourcesFile: resourcesFixture})
	uri := mustURI(t, "kbs:///default/key/key_id1")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			got, err := k.GetResource(context.Background(), uri)
			if err == nil && sum(got) != "730a6e18ee1e6de0b7edf0da1d658c1b75c176001346f2fd5a6750d0ccf6c8af" {
				err = errors.New("wrong value")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewDefaults(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts Options
		want []string
	}{
		{"zero", Options{}, []string{DefaultKeysFile, DefaultResourcesFile}},
		{"extras", Options{ExtraFiles: []string{"/a", "/b"}}, []string{DefaultKeysFile, DefaultResourcesFile, "/a", "/b"}},
		{"explicit", Options{KeysFile: "/k", ResourcesFile: "/r"}, []string{"/k", "/r"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := New(tc.opts)
			if got := k.Files(); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Files() = %q, want %q", got, tc.want)
			}
			k.Files()[0] = "changed"
			if k.Files()[0] != tc.want[0] {
				t.Fatal("Files() exposes internal state")
			}
		})
	}
}

func TestSplitExtraFiles(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"/etc/a.json", []string{"/etc/a.json"}},
		{"/etc/a.json,/etc/b.json", []string{"/etc/a.json", "/etc/b.json"}},
		{" /etc/a.json , ,/etc/b.json,", []string{"/etc/a.json", "/etc/b.json"}},
		{",,", nil},
	} {
		if got := SplitExtraFiles(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("SplitExtraFiles(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
