package encrypt_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// srcLayer is a layer of a test image: its tar, and the blob stored (the
// tar itself, or gzipped).
type srcLayer struct {
	tar, blob []byte
	mediaType string
}

func makeTar(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		data := files[name]
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testLayers are the layers of the test image: a gzip layer with a text
// file and 200 KiB of incompressible data, and an uncompressed layer.
func testLayers(t *testing.T) []srcLayer {
	t.Helper()
	big := make([]byte, 200<<10)
	for i := range big {
		big[i] = byte(i*7919 + i/251)
	}
	t1 := makeTar(t, map[string][]byte{"etc/motd": []byte("encrypted hello\n"), "data/blob": big})
	t2 := makeTar(t, map[string][]byte{"app/run.sh": []byte("#!/bin/sh\necho confidential\n")})
	return []srcLayer{
		{tar: t1, blob: gzipped(t, t1), mediaType: ocispec.MediaTypeImageLayerGzip},
		{tar: t2, blob: t2, mediaType: ocispec.MediaTypeImageLayer},
	}
}

func writeBlob(t *testing.T, dir string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	p := filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeLayout writes an OCI image layout at dir holding one image, tagged.
func writeLayout(t *testing.T, dir, tag string, layers []srcLayer) {
	t.Helper()
	cfg := ocispec.Image{
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispec.ImageConfig{Cmd: []string{"/app/run.sh"}},
		RootFS:   ocispec.RootFS{Type: "layers"},
	}
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest}
	for _, l := range layers {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(l.tar))
		d := writeBlob(t, dir, l.blob)
		d.MediaType = l.mediaType
		m.Layers = append(m.Layers, d)
	}
	m.Config = writeBlob(t, dir, mustJSON(t, cfg))
	m.Config.MediaType = ocispec.MediaTypeImageConfig
	md := writeBlob(t, dir, mustJSON(t, m))
	md.MediaType = ocispec.MediaTypeImageManifest
	md.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	idx := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{md}}
	if err := os.WriteFile(filepath.Join(dir, "index.json"), mustJSON(t, idx), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
}

func blobFile(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// readLayout returns the manifest and config of the image tagged tag.
func readLayout(t *testing.T, dir, tag string) (ocispec.Manifest, ocispec.Image) {
	t.Helper()
	var idx ocispec.Index
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	for _, md := range idx.Manifests {
		if md.Annotations[ocispec.AnnotationRefName] != tag {
			continue
		}
		if md.MediaType != ocispec.MediaTypeImageManifest {
			t.Fatalf("manifest media type %q", md.MediaType)
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(readBlob(t, dir, md.Digest), &m); err != nil {
			t.Fatal(err)
		}
		var cfg ocispec.Image
		if err := json.Unmarshal(readBlob(t, dir, m.Config.Digest), &cfg); err != nil {
			t.Fatal(err)
		}
		return m, cfg
	}
	t.Fatalf("no image tagged %q in %s", tag, dir)
	return ocispec.Manifest{}, ocispec.Image{}
}

func readBlob(t *testing.T, dir string, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(blobFile(dir, d))
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(b) != d {
		t.Fatalf("blob %s does not match its digest", d)
	}
	return b
}

// untar returns the tar inside blob, gunzipping if needed.
func untar(t *testing.T, blob []byte) []byte {
	t.Helper()
	if len(blob) > 2 && blob[0] == 0x1f && blob[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		out, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return blob
}
