package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"
)

const (
	recordVersion = 1
	recordSuffix  = ".json"
)

// layerRecord is meta/layers/<ID>.json.
type layerRecord struct {
	Version int           `json:"version"`
	ID      uint64        `json:"id"`
	ChainID digest.Digest `json:"chain_id"`
	Parent  digest.Digest `json:"parent,omitempty"`
}

func (r *layerRecord) validate(id uint64) error {
	if r.Version != recordVersion {
		return fmt.Errorf("unknown record version %d", r.Version)
	}
	if r.ID != id {
		return fmt.Errorf("record names layer %d", r.ID)
	}
	if err := r.ChainID.Validate(); err != nil {
		return fmt.Errorf("chain ID: %w", err)
	}
	if r.Parent != "" {
		if err := r.Parent.Validate(); err != nil {
			return fmt.Errorf("parent: %w", err)
		}
	}
	return nil
}

// bundleRecord is meta/bundles/<ID>.json.
type bundleRecord struct {
	Version int           `json:"version"`
	ID      uint64        `json:"id"`
	Bundle  string        `json:"bundle"`
	Rootfs  string        `json:"rootfs"`
	Top     digest.Digest `json:"top"`
}

func (r *bundleRecord) validate(id uint64) error {
	if r.Version != recordVersion {
		return fmt.Errorf("unknown record version %d", r.Version)
	}
	if r.ID != id {
		return fmt.Errorf("record names bundle %d", r.ID)
	}
	if !filepath.IsAbs(r.Bundle) || !filepath.IsAbs(r.Rootfs) {
		return errors.New("bundle and rootfs must be absolute paths")
	}
	if err := r.Top.Validate(); err != nil {
		return fmt.Errorf("top layer: %w", err)
	}
	return nil
}

// parseID parses a directory name made by strconv.FormatUint; anything
// else (leading zeros, signs, other names) is not ours.
func parseID(name string) (uint64, bool) {
	id, err := strconv.ParseUint(name, 10, 64)
	if err != nil || id == 0 || strconv.FormatUint(id, 10) != name {
		return 0, false
	}
	return id, true
}

// parseRecordName parses "<ID>.json".
func parseRecordName(name string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, recordSuffix)
	if !ok {
		return 0, false
	}
	return parseID(base)
}

func recordName(id uint64) string {
	return strconv.FormatUint(id, 10) + recordSuffix
}

// readRecord decodes the JSON record at path into v, refusing unknown
// fields and trailing data.
func readRecord(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if dec.More() {
		return errors.New("decode: trailing data")
	}
	return nil
}

// writeRecord atomically replaces path with the JSON encoding of v: the
// data goes to a temporary file in tmpDir (same file system, emptied by
// Open), is synced, and is renamed over path; the directory is synced too.
func writeRecord(tmpDir, path string, v any) (err error) {
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode record %s: %w", path, err)
	}
	f, err := os.CreateTemp(tmpDir, "record-")
	if err != nil {
		return fmt.Errorf("write record %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write record %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync record %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write record %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("commit record %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync dir %s: %w", dir, err)
	}
	return nil
}

// removeFile removes path; a missing file is not an error.
func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
