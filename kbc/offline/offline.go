package offline

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"

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
	ErrMalformed = errors.New("malformed offline resource file")
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
	raw, err := readLimited(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, false, nil
	}
	if err != nil {
		return nil, false, false, err
	}
	defer wipe(raw)

	entries, err := parseEntries(raw)
	if err != nil {
		return nil, true, false, fmt.Errorf("parse %s: %w", file, err)
	}
	// Decode every value so that a bad entry anywhere fails the call, as
	// upstream; keep only the one asked for. Sorted for a stable error.
	keys := make([]string, 0, len(entries))
	for key := range entries {
		keys = append(keys, key)
	}
	slices.Sort(keys)
	for _, key := range keys {
		dec, err := decode(entries[key])
		if err != nil {
			wipe(v)
			return nil, true, false, fmt.Errorf("entry %q in %s: value is not standard base64 (%v): %w", key, file, err, ErrMalformed)
		}
		if key == want {
			v, hit = dec, true
		} else {
			wipe(dec)
		}
	}
	return v, true, hit, nil
}

// parseEntries parses raw as a JSON object whose values are all strings.
// JSON errors are reduced to an offset: their text can quote the input.
func parseEntries(raw []byte) (map[string]string, error) {
	trimmed := bytes.TrimLeft(raw, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, fmt.Errorf("not a JSON object: %w", ErrMalformed)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("invalid JSON at byte %d: %w", se.Offset, ErrMalformed)
		}
		return nil, fmt.Errorf("not a JSON object: %w", ErrMalformed)
	}
	out := make(map[string]string, len(obj))
	for key, val := range obj {
		var s string
		if len(val) == 0 || val[0] != '"' || json.Unmarshal(val, &s) != nil {
			return nil, fmt.Errorf("entry %q is not a JSON string: %w", key, ErrMalformed)
		}
		out[key] = s
	}
	return out, nil
}

// decode decodes standard padded base64. Line breaks are ignored, so the
// output of base64(1) pasted into a value also works.
func decode(s string) ([]byte, error) {
	dst := make([]byte, base64.StdEncoding.DecodedLen(len(s)))
	n, err := base64.StdEncoding.Strict().Decode(dst, []byte(s))
	if err != nil {
		wipe(dst)
		return nil, err
	}
	return dst[:n], nil
}

// readLimited reads file, refusing one larger than MaxFileSize.
func readLimited(file string) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read resource file: %w", err) // err names file
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		wipe(raw)
		return nil, fmt.Errorf("read resource file: %w", err) // err names file
	}
	if len(raw) > MaxFileSize {
		wipe(raw)
		return nil, fmt.Errorf("read resource file %s: file is larger than the %d MiB limit", file, MaxFileSize>>20)
	}
	return raw, nil
}

// wipe zeroes b. It is best effort: the Go runtime may hold other copies.
func wipe(b []byte) {
	clear(b)
}
