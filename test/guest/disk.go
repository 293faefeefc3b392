package guest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
)

// NewDisk creates a sparse raw disk image of size bytes for Options.Disks.
func NewDisk(t testing.TB, dir string, name string, size int64) string {
	t.Helper()
	p := filepath.Join(dir, name)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Fatalf("create disk %s: %v", p, err)
	}
	return p
}

// InitdataDisk writes doc as the initdata block device kata's runtime
// attaches: the magic "initdata", the gzip length as a little-endian
// uint64, the gzip bytes, zero padding to a 512-byte sector.
func InitdataDisk(t testing.TB, dir string, doc []byte) string {
	t.Helper()
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	if _, err := zw.Write(doc); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("initdata")
	_ = binary.Write(&b, binary.LittleEndian, uint64(z.Len()))
	b.Write(z.Bytes())
	if pad := b.Len() % 512; pad != 0 {
		b.Write(make([]byte, 512-pad))
	}
	p := filepath.Join(dir, "initdata.img")
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatalf("write initdata disk: %v", err)
	}
	return p
}
