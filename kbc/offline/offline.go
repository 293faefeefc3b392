package offline

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/guestd/guestd/kbc/internal/secretmap"
	"github.com/guestd/guestd/kbc/resource"
)

const (
	// DefaultKeysFile is upstream's keys file.
	DefaultKeysFile = "/etc/aa-offline_fs_kbc-keys.json"
	// DefaultResourcesFile is upstream's resources file.
	DefaultResourcesFile = "/etc/aa-offline_fs_kbc-resources.json"
	// ExtraFilesEnv is the environment variable upstream reads for more
	// files, comma-separated. See SplitExtraFiles.
	ExtraFilesEnv = "OFFLINE_FS_KBC_EXTRA_FILE_PATH"
	// MaxFileSize is the largest file GetResource reads.
	MaxFileSize = 16 << 20
)

var (
	// ErrNotFound is wrapped by GetResource's error when no file holds the
	// resource.
	ErrNotFound = errors.New("resource not found")
	// ErrMalformed is wrapped by GetResource's error when a file is not a
	// JSON object of base64 strings.
	ErrMalformed = secretmap.ErrMalformed
)

// Options says where the resource files are. Empty fields take the
// defaults.
type Options struct {
	KeysFile      string   // default DefaultKeysFile
	ResourcesFile string   // default DefaultResourcesFile
	ExtraFiles    []string // read after the two above, in order
}

// SplitExtraFiles splits the value of ExtraFilesEnv into file paths. Paths
// are separated by ',', surrounding spaces are trimmed and empty entries
// dropped (upstream would try to read "" and skip it).
func SplitExtraFiles(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// KBC serves resources from offline files. It holds no resource data
// between calls and is safe for concurrent use.
type KBC struct {
	files []string
}

// New returns a KBC over the files opts names. It reads nothing: every
// GetResource reads the files afresh (see the package doc).
func New(opts Options) *KBC {
	keys, res := opts.KeysFile, opts.ResourcesFile
	if keys == "" {
		keys = DefaultKeysFile
	}
	if res == "" {
		res = DefaultResourcesFile
	}
	return &KBC{files: append([]string{keys, res}, opts.ExtraFiles...)}
}

// Files returns the files GetResource reads, in order.
func (k *KBC) Files() []string {
	return slices.Clone(k.files)
}

// GetResource returns the resource uri names. Only the resource plugin is
// served; the lookup key is uri.Path(), "repo/type/tag". Errors name the
// URI path, the files and the entry at fault, never a value.
func (k *KBC) GetResource(ctx context.Context, uri resource.URI) ([]byte, error) {
	if err := uri.Validate(); err != nil {
		return nil, fmt.Errorf("offline: get resource: %w", err)
	}
	if uri.Plugin != resource.DefaultPlugin {
		return nil, fmt.Errorf("offline: get resource %s: plugin %q not supported, only %q",
			uri, uri.Plugin, resource.DefaultPlugin)
	}
	want := uri.Path()
	var (
		found    []byte
		ok       bool
		searched []string
	)
	for _, f := range k.files {
		if err := ctx.Err(); err != nil {
			wipe(found)
			return nil, fmt.Errorf("offline: get resource %s: %w", want, err)
		}
		v, present, hit, err := lookup(f, want)
		if err != nil {
			wipe(found)
			return nil, fmt.Errorf("offline: get resource %s: %w", want, err)
		}
		if !present {
			searched = append(searched, f+" (absent)")
			continue
		}
		searched = append(searched, f)
		if hit {
			wipe(found)
			found, ok = v, true
		}
	}
	if !ok {
		return nil, fmt.Errorf("offline: get resource %s: %w in %s", want, ErrNotFound, strings.Join(searched, ", "))
	}
	return found, nil
}

// lookup reads file and validates every entry. present is false if the
// file does not exist. If the file has an entry for want, hit is set and v
// is its decoded value.
func lookup(file, want string) (v []byte, present, hit bool, err error) {
	raw, err := secretmap.ReadFile(file, MaxFileSize)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, fmt.Errorf("read resource file: %w", err) // err names file
	}
	defer wipe(raw)
	// Every value is decoded so that a bad entry anywhere fails the call, as
	// upstream; only the one asked for is kept.
	entries, err := secretmap.Parse(raw)
	if err != nil {
		return nil, true, false, fmt.Errorf("parse %s: %w", file, err)
	}
	v, hit = entries[want]
	delete(entries, want)
	secretmap.Wipe(entries)
	return v, true, hit, nil
}

// wipe zeroes b. It is best effort: the Go runtime may hold other copies.
func wipe(b []byte) {
	clear(b)
}
