package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/guestd/guestd/internal/atomicfile"
)

// WriteOCILayout writes a into the OCI image layout at dir (created if
// needed): oci-layout, blobs/<alg>/<hex> for every blob, and an index.json
// entry for a's top-level manifest annotated with tag
// (org.opencontainers.image.ref.name). An existing layout is extended: its
// other tags stay, an entry with the same tag is replaced. Blobs stored in
// files are hard-linked when possible.
func WriteOCILayout(dir, tag string, a Artifact) error {
	desc, err := a.Descriptor()
	if err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	blobs, err := a.Blobs()
	if err != nil {
		return fmt.Errorf("write OCI layout %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create OCI layout %s: %w", dir, err)
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return fmt.Errorf("encode oci-layout: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, ocispec.ImageLayoutFile), layout, 0o644); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := writeBlob(dir, b); err != nil {
			return err
		}
	}

	indexPath := filepath.Join(dir, "index.json")
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	switch data, err := os.ReadFile(indexPath); {
	case err == nil:
		if err := json.Unmarshal(data, &idx); err != nil {
			return fmt.Errorf("parse %s: %w", indexPath, err)
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("read %s: %w", indexPath, err)
	}
	kept := idx.Manifests[:0]
	for _, m := range idx.Manifests {
		if tag == "" || m.Annotations[ocispec.AnnotationRefName] != tag {
			kept = append(kept, m)
		}
	}
	if tag != "" {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	}
	desc.Platform = nil // the index.json entry names the manifest; platforms live in the image index
	idx.Manifests = append(kept, desc)
	data, err := json.Marshal(idx)
	if err != nil {
		return fmt.Errorf("encode %s: %w", indexPath, err)
	}
	return atomicfile.WriteFile(indexPath, data, 0o644)
}

// writeBlob stores b under dir/blobs unless it is already there.
func writeBlob(dir string, b Blob) error {
	if err := b.Digest.Validate(); err != nil {
		return fmt.Errorf("blob %q: %w", b.Digest, err)
	}
	p := filepath.Join(dir, "blobs", b.Digest.Algorithm().String(), b.Digest.Encoded())
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("create blob dir for %s: %w", b.Digest, err)
	}
	if b.Path == "" {
		return atomicfile.WriteFile(p, b.Data, 0o644)
	}
	if err := os.Link(b.Path, p); err == nil {
		return nil
	}
	src, err := b.Open()
	if err != nil {
		return err
	}
	defer src.Close()
	tmp, err := os.CreateTemp(filepath.Dir(p), ".tmp-")
	if err != nil {
		return fmt.Errorf("create blob %s: %w", b.Digest, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, src); err != nil {
		tmp.Close()
		return fmt.Errorf("copy blob %s: %w", b.Digest, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", b.Digest, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("store blob %s: %w", b.Digest, err)
	}
	return nil
}

// WriteDir writes a in the layout of the containers "dir:" transport
// (skopeo copy dir:DIR ...): manifest.json for the top-level manifest,
// <hex>.manifest.json for the manifests an index lists, <hex> for every
// other blob, and the version file. Unlike an OCI layout, it holds Docker
// schema 2 manifests as they are.
func WriteDir(dir string, a Artifact) error {
	blobs, err := a.Blobs()
	if err != nil {
		return fmt.Errorf("write dir image %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create dir image %s: %w", dir, err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, "version"), []byte("Directory Transport Version: 1.1\n"), 0o644); err != nil {
		return err
	}
	for i, b := range blobs {
		name := b.Digest.Encoded()
		switch {
		case i == len(blobs)-1:
			name = "manifest.json"
		case isManifest(b.MediaType):
			name += ".manifest.json"
		}
		data, err := b.Bytes()
		if err != nil {
			return fmt.Errorf("write dir image %s: %w", dir, err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
