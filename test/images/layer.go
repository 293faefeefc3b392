package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Compression is how a layer's tar is compressed. The zero value is Gzip.
type Compression int

const (
	// Gzip is application/vnd.oci.image.layer.v1.tar+gzip.
	Gzip Compression = iota
	// Zstd is application/vnd.oci.image.layer.v1.tar+zstd.
	Zstd
	// Uncompressed is application/vnd.oci.image.layer.v1.tar.
	Uncompressed
)

// MediaType returns the OCI layer media type for c.
func (c Compression) MediaType() string {
	switch c {
	case Zstd:
		return ocispec.MediaTypeImageLayerZstd
	case Uncompressed:
		return ocispec.MediaTypeImageLayer
	default:
		return ocispec.MediaTypeImageLayerGzip
	}
}

func (c Compression) String() string {
	switch c {
	case Zstd:
		return "zstd"
	case Uncompressed:
		return "uncompressed"
	default:
		return "gzip"
	}
}

// Epoch is the modification time of entries that do not set one, and the
// creation time of image configs: a fixed time keeps builds reproducible.
func Epoch() time.Time { return time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC) }

// Kind is the type of a layer entry.
type Kind int

const (
	// KindFile is a regular file with Content.
	KindFile Kind = iota
	// KindDir is a directory.
	KindDir
	// KindSymlink is a symbolic link to Target.
	KindSymlink
	// KindHardlink is a hard link to the earlier entry named Target.
	KindHardlink
	// KindFIFO is a named pipe.
	KindFIFO
	// KindCharDev is a character device (Devmajor, Devminor).
	KindCharDev
)

// Entry is one tar entry of a layer. Names are written verbatim, so an
// entry may be hostile ("../escape", "/abs", a symlink followed by a file
// through it). The zero Mode means 0644 for files, 0755 for dirs and 0777
// for symlinks; set Header for anything this struct cannot express.
type Entry struct {
	Name    string
	Kind    Kind
	Mode    int64 // permission and setuid/setgid/sticky bits
	UID     int
	GID     int
	Content []byte
	// Target is the link target of a symlink or hardlink.
	Target             string
	Devmajor, Devminor int64
	// ModTime defaults to Epoch.
	ModTime time.Time
	// Xattrs become PAX SCHILY.xattr records.
	Xattrs map[string]string
	// Header, when set, is written as is (Content follows it) and every
	// other field but Content is ignored.
	Header *tar.Header
}

// File returns a regular file entry.
func File(name, content string) Entry {
	return Entry{Name: name, Kind: KindFile, Content: []byte(content)}
}

// Dir returns a directory entry.
func Dir(name string) Entry { return Entry{Name: name, Kind: KindDir} }

// Symlink returns a symbolic link entry name -> target.
func Symlink(name, target string) Entry {
	return Entry{Name: name, Kind: KindSymlink, Target: target}
}

// Hardlink returns a hard link entry name -> target (an earlier entry).
func Hardlink(name, target string) Entry {
	return Entry{Name: name, Kind: KindHardlink, Target: target}
}

// Whiteout returns the OCI whiteout entry that deletes p (dir/.wh.base)
// from the layers below.
func Whiteout(p string) Entry {
	dir, base := path.Split(p)
	return Entry{Name: dir + ".wh." + base, Kind: KindFile}
}

// Opaque returns the OCI opaque whiteout entry (dir/.wh..wh..opq) that
// hides everything below dir in the layers below.
func Opaque(dir string) Entry {
	return Entry{Name: path.Join(dir, ".wh..wh..opq"), Kind: KindFile}
}

// WithMode returns e with permission bits mode.
func (e Entry) WithMode(mode int64) Entry { e.Mode = mode; return e }

// WithOwner returns e owned by uid:gid.
func (e Entry) WithOwner(uid, gid int) Entry { e.UID, e.GID = uid, gid; return e }

// WithXattr returns e with the extended attribute key=value added.
func (e Entry) WithXattr(key, value string) Entry {
	x := make(map[string]string, len(e.Xattrs)+1)
	for k, v := range e.Xattrs {
		x[k] = v
	}
	x[key] = value
	e.Xattrs = x
	return e
}

// header returns the tar header of e.
func (e Entry) header() (*tar.Header, error) {
	if e.Header != nil {
		return e.Header, nil
	}
	h := &tar.Header{
		Name:    e.Name,
		Mode:    e.Mode,
		Uid:     e.UID,
		Gid:     e.GID,
		ModTime: e.ModTime,
	}
	if h.ModTime.IsZero() {
		h.ModTime = Epoch()
	}
	switch e.Kind {
	case KindFile:
		h.Typeflag, h.Size = tar.TypeReg, int64(len(e.Content))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
	case KindDir:
		h.Typeflag = tar.TypeDir
		if h.Mode == 0 {
			h.Mode = 0o755
		}
	case KindSymlink:
		h.Typeflag, h.Linkname = tar.TypeSymlink, e.Target
		if h.Mode == 0 {
			h.Mode = 0o777
		}
	case KindHardlink:
		h.Typeflag, h.Linkname = tar.TypeLink, e.Target
		if h.Mode == 0 {
			h.Mode = 0o644
		}
	case KindFIFO:
		h.Typeflag = tar.TypeFifo
		if h.Mode == 0 {
			h.Mode = 0o644
		}
	case KindCharDev:
		h.Typeflag, h.Devmajor, h.Devminor = tar.TypeChar, e.Devmajor, e.Devminor
		if h.Mode == 0 {
			h.Mode = 0o666
		}
	default:
		return nil, fmt.Errorf("tar entry %q: unknown kind %d", e.Name, e.Kind)
	}
	if len(e.Xattrs) > 0 {
		h.PAXRecords = make(map[string]string, len(e.Xattrs))
		for k, v := range e.Xattrs {
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		h.Format = tar.FormatPAX
	}
	return h, nil
}

// Tar returns the entries as an uncompressed tar stream, in order.
func Tar(entries ...Entry) ([]byte, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h, err := e.header()
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write tar header %q: %w", h.Name, err)
		}
		if len(e.Content) > 0 {
			if _, err := tw.Write(e.Content); err != nil {
				return nil, fmt.Errorf("write tar entry %q: %w", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("finish tar: %w", err)
	}
	return b.Bytes(), nil
}

// Compress returns data compressed with c (deterministically: the gzip
// header has no name or time, and zstd runs single-threaded).
func Compress(c Compression, data []byte) ([]byte, error) {
	var b bytes.Buffer
	w, err := compressor(&b, c, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(data); err != nil {
		return nil, fmt.Errorf("compress %s: %w", c, err)
	}
	if err := w.Close(); err != nil {
		return nil, fmt.Errorf("compress %s: %w", c, err)
	}
	return b.Bytes(), nil
}

// compressor returns a writer compressing into w with c; gzipLevel applies
// to Gzip only.
func compressor(w io.Writer, c Compression, gzipLevel int) (io.WriteCloser, error) {
	switch c {
	case Gzip:
		zw, err := gzip.NewWriterLevel(w, gzipLevel)
		if err != nil {
			return nil, fmt.Errorf("create gzip writer: %w", err)
		}
		return zw, nil
	case Zstd:
		zw, err := zstd.NewWriter(w, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, fmt.Errorf("create zstd writer: %w", err)
		}
		return zw, nil
	case Uncompressed:
		return nopCloser{w}, nil
	default:
		return nil, fmt.Errorf("unknown compression %d", int(c))
	}
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Blob is content addressed by its digest: a layer, a config, a manifest
// or an index. Its bytes are in Data, or in the file Path for big blobs.
type Blob struct {
	MediaType string
	Digest    digest.Digest
	Size      int64
	Data      []byte
	Path      string
	// Annotations go into the blob's descriptor.
	Annotations map[string]string
}

// NewBlob returns an in-memory blob of data.
func NewBlob(mediaType string, data []byte) Blob {
	return Blob{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data)), Data: data}
}

// Descriptor returns the OCI descriptor of b.
func (b Blob) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: b.MediaType, Digest: b.Digest, Size: b.Size, Annotations: b.Annotations}
}

// Open returns a reader of b's bytes.
func (b Blob) Open() (io.ReadCloser, error) {
	if b.Path == "" {
		return io.NopCloser(bytes.NewReader(b.Data)), nil
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", b.Digest, err)
	}
	return f, nil
}

// Bytes returns b's bytes (reading Path if the blob lives in a file).
func (b Blob) Bytes() ([]byte, error) {
	if b.Path == "" {
		return b.Data, nil
	}
	data, err := os.ReadFile(b.Path)
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", b.Digest, err)
	}
	return data, nil
}

// Layer is a layer blob and the digest of its uncompressed tar (the
// diff_id the image config lists).
type Layer struct {
	Blob
	DiffID digest.Digest
}

// BuildLayer builds a layer from entries compressed with c.
func BuildLayer(c Compression, entries ...Entry) (Layer, error) {
	tb, err := Tar(entries...)
	if err != nil {
		return Layer{}, fmt.Errorf("build layer: %w", err)
	}
	return LayerFromTar(c, tb)
}

// NewLayer is BuildLayer that fails the test on error.
func NewLayer(t testing.TB, c Compression, entries ...Entry) Layer {
	t.Helper()
	l, err := BuildLayer(c, entries...)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// LayerFromTar makes a layer of an uncompressed tar stream (which may be
// hand-made and hostile, or not a tar at all) compressed with c.
func LayerFromTar(c Compression, tarData []byte) (Layer, error) {
	blob, err := Compress(c, tarData)
	if err != nil {
		return Layer{}, fmt.Errorf("build layer: %w", err)
	}
	return Layer{Blob: NewBlob(c.MediaType(), blob), DiffID: digest.FromBytes(tarData)}, nil
}

// RawLayer makes a layer of arbitrary blob bytes with the given media type
// and claimed diff_id, for layers no builder would make.
func RawLayer(mediaType string, blob []byte, diffID digest.Digest) Layer {
	return Layer{Blob: NewBlob(mediaType, blob), DiffID: diffID}
}
