package config

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
)

// Initdata locations and names used by kata (src/agent/src/initdata.rs).
const (
	InitdataDir       = "/run/confidential-containers/initdata"
	InitdataTOMLPath  = InitdataDir + "/initdata.toml"
	InitdataAAPath    = InitdataDir + "/aa.toml"
	InitdataCDHPath   = InitdataDir + "/cdh.toml"
	InitdataKeyAA     = "aa.toml"
	InitdataKeyCDH    = "cdh.toml"
	InitdataKeyPolicy = "policy.rego"

	// InitdataVersion is the only initdata version kata accepts.
	InitdataVersion = "0.1.0"
	// InitdataMagic starts an initdata block device.
	InitdataMagic = "initdata"
	// DefaultInitdataLimit bounds both the compressed and the decompressed
	// size of an initdata block when the caller gives no limit.
	DefaultInitdataLimit = 1 << 20
)

// Initdata is kata's initdata document.
type Initdata struct {
	Version   string            // always InitdataVersion
	Algorithm string            // sha256, sha384 or sha512
	Data      map[string]string // [data], e.g. aa.toml, cdh.toml, policy.rego
	// Raw is the document exactly as read. The digest covers these bytes
	// and the AA sends them to the KBS as init-data {format:"toml", body}.
	Raw []byte
	// Digest is Algorithm over Raw.
	Digest []byte
	// Unknown lists top-level keys guestd does not know.
	Unknown []string
}

// InitdataDigest hashes raw with the named algorithm (sha256, sha384 or
// sha512).
func InitdataDigest(algorithm string, raw []byte) ([]byte, error) {
	switch algorithm {
	case "sha256":
		d := sha256.Sum256(raw)
		return d[:], nil
	case "sha384":
		d := sha512.Sum384(raw)
		return d[:], nil
	case "sha512":
		d := sha512.Sum512(raw)
		return d[:], nil
	}
	return nil, fmt.Errorf("unsupported initdata algorithm %s, expected sha256, sha384 or sha512", quoteShort(algorithm))
}

// ParseInitdata parses an initdata TOML document and computes its digest.
// version, algorithm and [data] are required (as in kata); every [data]
// value must be a string. The embedded configs are parsed on demand by AA
// and CDH.
func ParseInitdata(raw []byte) (*Initdata, error) {
	const src = "initdata.toml"
	tree, err := decodeTree(src, raw)
	if err != nil {
		return nil, fmt.Errorf("parse initdata: %w", err)
	}
	r := &reader{src: src}
	root := newTable(r, "", tree)
	d := &Initdata{Raw: bytes.Clone(raw), Data: map[string]string{}}
	if v, ok := root.str("version"); !ok {
		root.missing("version")
	} else if v != InitdataVersion {
		r.fail("version", "%s is not supported, expected %s", quoteShort(v), strconv.Quote(InitdataVersion))
	} else {
		d.Version = v
	}
	if a, ok := root.str("algorithm"); !ok {
		root.missing("algorithm")
	} else if d.Digest, err = InitdataDigest(a, raw); err != nil {
		r.fail("algorithm", "%v", err)
	} else {
		d.Algorithm = a
	}
	if dt, ok := root.sub("data"); !ok {
		root.missing("data")
	} else {
		keys := make([]string, 0, len(dt.m))
		for k := range dt.m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if s, ok := dt.str(k); ok {
				d.Data[k] = s
			}
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("parse initdata: %w", r.err)
	}
	d.Unknown = root.unknown()
	return d, nil
}

// LoadInitdata reads and parses the initdata TOML at file (kata writes it
// to InitdataTOMLPath).
func LoadInitdata(file string) (*Initdata, error) {
	data, err := readConfigFile(file)
	if err != nil {
		return nil, fmt.Errorf("load initdata: %w", err)
	}
	d, err := ParseInitdata(data)
	if err != nil {
		return nil, fmt.Errorf("load initdata %s: %w", file, err)
	}
	return d, nil
}

// AA parses the embedded aa.toml; it returns nil, nil when there is none.
func (d *Initdata) AA() (*AA, error) {
	s, ok := d.Data[InitdataKeyAA]
	if !ok {
		return nil, nil
	}
	return ParseAA("initdata data.\"aa.toml\"", []byte(s))
}

// CDH parses the embedded cdh.toml; it returns nil, nil when there is none.
func (d *Initdata) CDH() (*CDH, error) {
	s, ok := d.Data[InitdataKeyCDH]
	if !ok {
		return nil, nil
	}
	return ParseCDH("initdata data.\"cdh.toml\"", []byte(s))
}

// Policy returns the embedded policy.rego for the agent policy, if any.
func (d *Initdata) Policy() (string, bool) {
	s, ok := d.Data[InitdataKeyPolicy]
	return s, ok
}

// ReadInitdataBlock reads the initdata block device layout kata's runtime
// writes and kata-agent reads: the 8-byte magic "initdata", the length of
// the compressed document as a little-endian uint64, then that many bytes
// of gzip, then zero padding to the sector size (not read). It returns the
// decompressed TOML document, byte for byte, for ParseInitdata.
//
// limit bounds both the compressed length and the decompressed size
// (DefaultInitdataLimit when limit <= 0); kata itself trusts the length
// field. Like kata, only the first gzip member is read and bytes after it
// within the declared length are ignored.
func ReadInitdataBlock(r io.Reader, limit int64) ([]byte, error) {
	if limit <= 0 {
		limit = DefaultInitdataLimit
	}
	var hdr [16]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("read initdata block header: %w", err)
	}
	if string(hdr[:8]) != InitdataMagic {
		return nil, fmt.Errorf("read initdata block: magic is %q, expected %q", hdr[:8], InitdataMagic)
	}
	n := binary.LittleEndian.Uint64(hdr[8:])
	if n == 0 {
		return nil, errors.New("read initdata block: length is 0")
	}
	if n > uint64(limit) {
		return nil, fmt.Errorf("read initdata block: length %d exceeds the limit of %d bytes", n, limit)
	}
	// Read incrementally rather than allocating n up front: the length
	// field is not trusted until the bytes are there.
	compressed, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("read initdata block: %d bytes of gzip: %w", n, err)
	}
	if uint64(len(compressed)) != n {
		return nil, fmt.Errorf("read initdata block: truncated, length says %d bytes of gzip but only %d follow", n, len(compressed))
	}
	zr, err := gzip.NewReader(bytes.NewReader(compressed))
	if err != nil {
		return nil, fmt.Errorf("read initdata block: gunzip: %w", err)
	}
	zr.Multistream(false)
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read initdata block: gunzip: %w", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("read initdata block: decompressed document exceeds the limit of %d bytes", limit)
	}
	return out, nil
}
