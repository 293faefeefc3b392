package sev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/guestd/guestd/kbc/internal/secretmap"
	"github.com/guestd/guestd/kbc/resource"
)

const (
	// DefaultRoot is where efi_secret exposes secret entries.
	DefaultRoot = "/sys/kernel/security/secrets/coco"
	// KeysGUID names the secret entry holding the offline SEV KBC's keys.
	KeysGUID = "e6f5a162-d67f-4750-a67c-5d065f2a9910"
	// MaxSecretSize is the largest secret entry New reads.
	MaxSecretSize = 64 << 10

	securityFSDir = "/sys/kernel/security"
	module        = "efi_secret"
)

var (
	// ErrNoSecretArea is wrapped when the secrets directory does not exist.
	ErrNoSecretArea = errors.New("EFI secret area not present")
	// ErrNoSecret is wrapped when the area has no entry for KeysGUID.
	ErrNoSecret = errors.New("secret entry not present")
	// ErrMalformed is wrapped when the entry is not a JSON object of
	// base64 strings.
	ErrMalformed = secretmap.ErrMalformed
	// ErrNotFound is wrapped by GetResource when no key has the URI's path.
	ErrNotFound = errors.New("resource not found")
	// ErrClosed is wrapped by GetResource after Close.
	ErrClosed = errors.New("SEV KBC closed")
)

// Options configures New.
type Options struct {
	// Root is the efi_secret directory; default DefaultRoot.
	Root string
	// NoSetup stops New from mounting securityfs and loading or unloading
	// efi_secret; use it when the init system does that (or in tests).
	NoSetup bool
}

// KBC serves the keys injected at launch. It is safe for concurrent use.
type KBC struct {
	file string // the secret entry the keys came from, for errors

	mu     sync.RWMutex
	keys   map[string][]byte
	closed bool
}

// system is what setup needs from the kernel; tests replace it.
type system interface {
	securityFSMounted(dir string) (bool, error)
	mountSecurityFS(dir string) error
	modprobe(ctx context.Context, args ...string) error
}

// New reads the keys from the secret entry KeysGUID under opts.Root,
// removes the entry (see the package doc) and returns a KBC holding them.
// Because the entry is consumed, create one KBC per boot and keep it.
func New(ctx context.Context, opts Options) (*KBC, error) {
	return newKBC(ctx, opts, hostSystem{})
}

func newKBC(ctx context.Context, opts Options, sys system) (k *KBC, err error) {
	root := opts.Root
	if root == "" {
		root = DefaultRoot
	}
	file := filepath.Join(root, KeysGUID)
	if !opts.NoSetup {
		var loaded bool
		loaded, err = setup(ctx, root, sys)
		if err != nil {
			return nil, err
		}
		if loaded {
			defer func() {
				// Unload even if ctx is done: the module was loaded for us.
				if uerr := sys.modprobe(context.WithoutCancel(ctx), "-r", module); uerr != nil {
					if k != nil {
						k.Close()
						k = nil
					}
					err = errors.Join(err, fmt.Errorf("sev: unload %s after reading %s: %w", module, file, uerr))
				}
			}()
		}
	}
	keys, err := consume(root, file)
	if err != nil {
		return nil, err
	}
	return &KBC{file: file, keys: keys}, nil
}

// setup makes the secret area appear if it is missing. loaded reports
// whether it loaded efi_secret (which the caller then unloads).
func setup(ctx context.Context, root string, sys system) (loaded bool, err error) {
	if isDir(root) {
		return false, nil
	}
	mounted, err := sys.securityFSMounted(securityFSDir)
	if err != nil {
		return false, fmt.Errorf("sev: check securityfs at %s: %w", securityFSDir, err)
	}
	if !mounted {
		if err := sys.mountSecurityFS(securityFSDir); err != nil {
			return false, fmt.Errorf("sev: mount securityfs at %s: %w", securityFSDir, err)
		}
		if isDir(root) {
			return false, nil
		}
	}
	if err := sys.modprobe(ctx, module); err != nil {
		return false, fmt.Errorf("sev: EFI secret area %s absent and loading %s failed: %w", root, module, err)
	}
	return true, nil
}

// consume reads and unlinks the secret entry file, then parses it.
func consume(root, file string) (map[string][]byte, error) {
	if !isDir(root) {
		return nil, fmt.Errorf("sev: %w at %s (securityfs not mounted, %s not loaded, or no secret injected at launch)",
			ErrNoSecretArea, root, module)
	}
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sev: %w: %s (no secret with GUID %s was injected, or it was already read and removed this boot)",
			ErrNoSecret, file, KeysGUID)
	}
	if err != nil {
		return nil, fmt.Errorf("sev: read secret: %w", err) // err names file
	}
	raw, rerr := io.ReadAll(io.LimitReader(f, MaxSecretSize+1))
	f.Close()
	defer clear(raw)
	// Unlink whatever the read gave, before parsing, as upstream: the
	// secret is consumed whether or not it can be used.
	if err := os.Remove(file); err != nil {
		return nil, fmt.Errorf("sev: remove secret %s after reading it (it stays readable until removed): %w", file, err)
	}
	if rerr != nil {
		return nil, fmt.Errorf("sev: read secret: %w", rerr)
	}
	if len(raw) > MaxSecretSize {
		return nil, fmt.Errorf("sev: read secret %s: larger than the %d KiB limit", file, MaxSecretSize>>10)
	}
	keys, err := secretmap.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("sev: parse secret %s: %w", file, err)
	}
	return keys, nil
}

// GetResource returns the key whose ID is uri.Path(). Only the resource
// plugin is served.
func (k *KBC) GetResource(ctx context.Context, uri resource.URI) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sev: get resource: %w", err)
	}
	if err := uri.Validate(); err != nil {
		return nil, fmt.Errorf("sev: get resource: %w", err)
	}
	if uri.Plugin != resource.DefaultPlugin {
		return nil, fmt.Errorf("sev: get resource %s: plugin %q not supported, only %q",
			uri, uri.Plugin, resource.DefaultPlugin)
	}
	id := uri.Path()
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return nil, fmt.Errorf("sev: get resource %s: %w", id, ErrClosed)
	}
	v, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("sev: get resource %s: %w in secret %s", id, ErrNotFound, k.file)
	}
	return bytes.Clone(v), nil
}

// Close zeroes the keys held in memory (best effort: the Go runtime may
// hold other copies). GetResource fails afterwards.
func (k *KBC) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	secretmap.Wipe(k.keys)
	k.keys, k.closed = nil, true
	return nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
