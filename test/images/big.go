package images

import (
	"archive/tar"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	kgzip "github.com/klauspost/compress/gzip"
	digest "github.com/opencontainers/go-digest"
)

// Big returns a linux/amd64 image of layers gzip layers, each a tar of one
// file (/data/layer-<i>.bin) of bytesPerLayer pseudo-random, incompressible
// bytes, seeded by the layer index: the same arguments give the same image.
// The layer blobs are streamed into files under a new t.TempDir, so memory
// use does not grow with the size; WriteOCILayout hard-links them.
func Big(t testing.TB, layers int, bytesPerLayer int64) Image {
	t.Helper()
	dir := t.TempDir()
	img := Image{Config: Config{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}}
	for i := range layers {
		l, err := WriteBigLayer(dir, uint64(i), bytesPerLayer, Gzip)
		if err != nil {
			t.Fatalf("big image layer %d: %v", i, err)
		}
		img.Layers = append(img.Layers, l)
	}
	return img
}

// WriteBigLayer streams a layer holding one file of size pseudo-random
// bytes (ChaCha8 seeded with seed) compressed with c into a file in dir,
// named by its digest. Gzip uses the fastest level of klauspost/compress,
// which stores incompressible blocks quickly.
func WriteBigLayer(dir string, seed uint64, size int64, c Compression) (Layer, error) {
	name := "data/layer-" + strconv.FormatUint(seed, 10) + ".bin"
	f, err := os.CreateTemp(dir, ".layer-")
	if err != nil {
		return Layer{}, fmt.Errorf("create layer file for %s: %w", name, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	defer f.Close()

	blobDigester := digest.Canonical.Digester()
	counter := &countingWriter{w: io.MultiWriter(f, blobDigester.Hash())}
	var zw io.WriteCloser
	if c == Gzip {
		zw, err = kgzip.NewWriterLevel(counter, kgzip.BestSpeed)
	} else {
		zw, err = compressor(counter, c, 0)
	}
	if err != nil {
		return Layer{}, fmt.Errorf("layer %s: %w", name, err)
	}
	diffDigester := digest.Canonical.Digester()
	tw := tar.NewWriter(io.MultiWriter(zw, diffDigester.Hash()))
	for _, h := range []*tar.Header{
		{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: Epoch()},
		{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: size, ModTime: Epoch()},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return Layer{}, fmt.Errorf("layer %s: write tar header: %w", name, err)
		}
	}
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	if _, err := io.CopyN(tw, rand.NewChaCha8(key), size); err != nil {
		return Layer{}, fmt.Errorf("layer %s: write data: %w", name, err)
	}
	if err := tw.Close(); err != nil {
		return Layer{}, fmt.Errorf("layer %s: finish tar: %w", name, err)
	}
	if err := zw.Close(); err != nil {
		return Layer{}, fmt.Errorf("layer %s: finish %s: %w", name, c, err)
	}
	if err := f.Close(); err != nil {
		return Layer{}, fmt.Errorf("layer %s: write %s: %w", name, f.Name(), err)
	}
	d := blobDigester.Digest()
	p := filepath.Join(dir, d.Encoded())
	if err := os.Rename(f.Name(), p); err != nil {
		return Layer{}, fmt.Errorf("layer %s: store blob: %w", name, err)
	}
	return Layer{
		Blob:   Blob{MediaType: c.MediaType(), Digest: d, Size: counter.n, Path: p},
		DiffID: diffDigester.Digest(),
	}, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
