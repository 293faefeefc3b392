package securemount

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
)

// Key sizes.
const (
	// randomKeySize is the size of a random key, as upstream.
	randomKeySize = 4096
	// maxKeySize is cryptsetup's own limit on a key file (8 MiB).
	maxKeySize = 8 << 20
	// minFormatKeySize is the least key size accepted to format a device:
	// the PBKDF is cheap (see the package doc), so the key must carry the
	// entropy itself.
	minFormatKeySize = 32
)

// key returns the key for r. The caller owns it and must clear it.
func (m *Mounter) key(ctx context.Context, r *request) ([]byte, error) {
	var (
		k   []byte
		err error
	)
	switch r.key.kind {
	case keyRandom:
		k = make([]byte, randomKeySize)
		_, err = rand.Read(k)
	case keySealed:
		k, err = m.cfg.Unsealer.Unseal(ctx, []byte(r.key.sealed))
	case keyKBS:
		k, err = m.cfg.KBC.GetResource(ctx, r.key.uri)
	case keyFile:
		k, err = readKeyFile(r.key.path)
	}
	if err != nil {
		clear(k)
		return nil, fmt.Errorf("get key (%s): %w", r.key.describe(), err)
	}
	var bad string
	switch {
	case len(k) == 0:
		bad = "is empty"
	case len(k) > maxKeySize:
		bad = fmt.Sprintf("is %d bytes, more than cryptsetup's limit of %d", len(k), maxKeySize)
	case r.source == sourceEmpty && len(k) < minFormatKeySize:
		bad = fmt.Sprintf("is %d bytes; formatting needs at least %d random bytes (the LUKS2 keyslot uses a cheap PBKDF)", len(k), minFormatKeySize)
	}
	if bad != "" {
		clear(k)
		return nil, fmt.Errorf("%w: key (%s) %s", ErrInvalid, r.key.describe(), bad)
	}
	return k, nil
}

// readKeyFile reads a regular file into one buffer of its exact size, so
// no copies of the key are left behind by buffer growth.
func readKeyFile(p string) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", p)
	}
	if fi.Size() > maxKeySize {
		return nil, fmt.Errorf("%s is %d bytes, more than cryptsetup's limit of %d", p, fi.Size(), maxKeySize)
	}
	k := make([]byte, fi.Size())
	if _, err := io.ReadFull(f, k); err != nil {
		clear(k)
		return nil, fmt.Errorf("read %s: %w", p, err)
	}
	return k, nil
}
