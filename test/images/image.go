package images

import (
	"encoding/json"
	"fmt"
	"strconv"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker schema 2 media types, for images built with Docker set.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayerGzip    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar"
)

// Artifact is what a tag can point at: an Image, an Index or a
// RawManifest.
type Artifact interface {
	// Descriptor returns the descriptor of the top-level manifest or index.
	Descriptor() (ocispec.Descriptor, error)
	// Blobs returns every blob the artifact consists of, manifests and
	// indexes included, each after the blobs it references: the top-level
	// manifest or index comes last.
	Blobs() ([]Blob, error)
}

// Config is the part of the image config a container runtime uses.
type Config struct {
	User       string
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	Labels     map[string]string
	StopSignal string
}

// Image is a single-platform image.
type Image struct {
	Layers []Layer
	Config Config
	// Platform defaults to linux/amd64.
	Platform ocispec.Platform
	// Annotations go into the manifest.
	Annotations map[string]string
	// DiffIDs, when non-nil, replace the layers' diff_ids in the config:
	// a hostile image whose config does not match its layers.
	DiffIDs []digest.Digest
	// Docker makes a Docker schema 2 manifest and config instead of OCI.
	Docker bool
}

// platform returns img's platform with the linux/amd64 defaults.
func (img Image) platform() ocispec.Platform {
	p := img.Platform
	if p.OS == "" {
		p.OS = "linux"
	}
	if p.Architecture == "" {
		p.Architecture = "amd64"
	}
	return p
}

// ConfigBlob returns the image config blob.
func (img Image) ConfigBlob() (Blob, error) {
	created := Epoch()
	p := img.platform()
	c := ocispec.Image{
		Created:  &created,
		Platform: p,
		Config: ocispec.ImageConfig{
			User:       img.Config.User,
			Env:        img.Config.Env,
			Entrypoint: img.Config.Entrypoint,
			Cmd:        img.Config.Cmd,
			WorkingDir: img.Config.WorkingDir,
			Labels:     img.Config.Labels,
			StopSignal: img.Config.StopSignal,
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{}},
	}
	if img.DiffIDs != nil {
		c.RootFS.DiffIDs = img.DiffIDs
	} else {
		for _, l := range img.Layers {
			c.RootFS.DiffIDs = append(c.RootFS.DiffIDs, l.DiffID)
		}
	}
	for i := range img.Layers {
		c.History = append(c.History, ocispec.History{Created: &created, CreatedBy: "guestd test layer " + strconv.Itoa(i)})
	}
	b, err := json.Marshal(c)
	if err != nil {
		return Blob{}, fmt.Errorf("encode image config: %w", err)
	}
	mt := ocispec.MediaTypeImageConfig
	if img.Docker {
		mt = MediaTypeDockerConfig
	}
	return NewBlob(mt, b), nil
}

// ManifestBlob returns the image manifest blob.
func (img Image) ManifestBlob() (Blob, error) {
	cfg, err := img.ConfigBlob()
	if err != nil {
		return Blob{}, err
	}
	m := ocispec.Manifest{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageManifest,
		Config:      cfg.Descriptor(),
		Layers:      make([]ocispec.Descriptor, 0, len(img.Layers)),
		Annotations: img.Annotations,
	}
	if img.Docker {
		m.MediaType = MediaTypeDockerManifest
	}
	for _, l := range img.Layers {
		d := l.Descriptor()
		if img.Docker {
			d.MediaType = dockerLayerType(d.MediaType)
		}
		m.Layers = append(m.Layers, d)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return Blob{}, fmt.Errorf("encode image manifest: %w", err)
	}
	return NewBlob(m.MediaType, b), nil
}

// dockerLayerType maps OCI layer media types to their Docker equivalents
// (zstd and others have none and stay as they are).
func dockerLayerType(mt string) string {
	switch mt {
	case ocispec.MediaTypeImageLayerGzip:
		return MediaTypeDockerLayerGzip
	case ocispec.MediaTypeImageLayer:
		return MediaTypeDockerLayer
	default:
		return mt
	}
}

// Descriptor returns the manifest's descriptor, with its platform.
func (img Image) Descriptor() (ocispec.Descriptor, error) {
	m, err := img.ManifestBlob()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d := m.Descriptor()
	p := img.platform()
	d.Platform = &p
	return d, nil
}

// Blobs returns the layers (deduplicated), the config and the manifest.
func (img Image) Blobs() ([]Blob, error) {
	cfg, err := img.ConfigBlob()
	if err != nil {
		return nil, err
	}
	m, err := img.ManifestBlob()
	if err != nil {
		return nil, err
	}
	var out []Blob
	seen := map[digest.Digest]bool{}
	for _, l := range img.Layers {
		if !seen[l.Digest] {
			seen[l.Digest] = true
			out = append(out, l.Blob)
		}
	}
	return append(out, cfg, m), nil
}

// Index is a multi-platform image: an OCI image index (or a Docker
// manifest list) over images whose Platform tells them apart.
type Index struct {
	Images      []Image
	Annotations map[string]string
	// Docker makes a Docker manifest list instead of an OCI index; set it
	// on the images too for an all-Docker image.
	Docker bool
}

// IndexBlob returns the index blob.
func (ix Index) IndexBlob() (Blob, error) {
	idx := ocispec.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   ocispec.MediaTypeImageIndex,
		Manifests:   make([]ocispec.Descriptor, 0, len(ix.Images)),
		Annotations: ix.Annotations,
	}
	if ix.Docker {
		idx.MediaType = MediaTypeDockerManifestList
	}
	for i, img := range ix.Images {
		d, err := img.Descriptor()
		if err != nil {
			return Blob{}, fmt.Errorf("index image %d: %w", i, err)
		}
		idx.Manifests = append(idx.Manifests, d)
	}
	b, err := json.Marshal(idx)
	if err != nil {
		return Blob{}, fmt.Errorf("encode image index: %w", err)
	}
	return NewBlob(idx.MediaType, b), nil
}

// Descriptor returns the index's descriptor.
func (ix Index) Descriptor() (ocispec.Descriptor, error) {
	b, err := ix.IndexBlob()
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return b.Descriptor(), nil
}

// Blobs returns every image's blobs (deduplicated) and then the index.
func (ix Index) Blobs() ([]Blob, error) {
	var out []Blob
	seen := map[digest.Digest]bool{}
	for i, img := range ix.Images {
		bs, err := img.Blobs()
		if err != nil {
			return nil, fmt.Errorf("index image %d: %w", i, err)
		}
		for _, b := range bs {
			if !seen[b.Digest] {
				seen[b.Digest] = true
				out = append(out, b)
			}
		}
	}
	idx, err := ix.IndexBlob()
	if err != nil {
		return nil, err
	}
	return append(out, idx), nil
}

// RawManifest is a manifest (or index) given as bytes, with the blobs it
// references: for manifests no builder would make.
type RawManifest struct {
	MediaType string
	Body      []byte
	// Refs are the blobs (and child manifests) Body references, children
	// before parents.
	Refs []Blob
}

// Descriptor returns the descriptor of Body.
func (m RawManifest) Descriptor() (ocispec.Descriptor, error) {
	return NewBlob(m.MediaType, m.Body).Descriptor(), nil
}

// Blobs returns Refs followed by the manifest itself.
func (m RawManifest) Blobs() ([]Blob, error) {
	return append(append([]Blob(nil), m.Refs...), NewBlob(m.MediaType, m.Body)), nil
}

// isManifest reports whether a media type is a manifest or index (pushed to
// /manifests/) rather than a blob (pushed to /blobs/).
func isManifest(mediaType string) bool {
	switch mediaType {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		MediaTypeDockerManifest, MediaTypeDockerManifestList:
		return true
	}
	return false
}
