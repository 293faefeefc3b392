package eventlog

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"os"
	"strings"
)

// Algorithm is a TCG algorithm id (TPM_ALG_ID) of a register bank.
type Algorithm uint16

// The algorithms an AAEL entry can be digested with.
const (
	SHA256 Algorithm = 0x000B
	SHA384 Algorithm = 0x000C
	SHA512 Algorithm = 0x000D
)

// Size returns the digest size of a, or 0 for an unknown algorithm.
func (a Algorithm) Size() int {
	switch a {
	case SHA256:
		return sha256.Size
	case SHA384:
		return sha512.Size384
	case SHA512:
		return sha512.Size
	}
	return 0
}

// String returns the algorithm's name, as "sha384".
func (a Algorithm) String() string {
	switch a {
	case SHA256:
		return "sha256"
	case SHA384:
		return "sha384"
	case SHA512:
		return "sha512"
	}
	return fmt.Sprintf("algorithm %#04x", uint16(a))
}

func (a Algorithm) new() hash.Hash {
	switch a {
	case SHA256:
		return sha256.New()
	case SHA384:
		return sha512.New384()
	case SHA512:
		return sha512.New()
	}
	return nil
}

// sum returns the digest of the concatenated parts.
func (a Algorithm) sum(parts ...[]byte) []byte {
	h := a.new()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}

// Format constants of an AAEL entry.
const (
	// EventTag is the TCG event type EV_EVENT_TAG.
	EventTag uint32 = 0x6
	// TaggedEventID is the tagged event id of AAEL events: the ASCII
	// "AAEL" read as a big-endian word, written little-endian.
	TaggedEventID uint32 = 0x4141454c
)

// ErrInvalidEvent is wrapped by errors for an event that breaks the AAEL
// rules (white space in the domain or operation, a newline in the
// content).
var ErrInvalidEvent = errors.New("invalid AAEL event")

// ErrMalformed is wrapped by errors for a log that does not parse.
var ErrMalformed = errors.New("malformed AAEL")

// Entry is one parsed log entry.
type Entry struct {
	// Register is the target measurement register recorded in the entry:
	// a CC MR index on TDX, the PCR index on a TPM.
	Register uint32
	// Algorithm and Digest are the entry's digest of its tagged event.
	Algorithm Algorithm
	Digest    []byte
	// Domain, Operation and Content are the event, split at the first two
	// spaces of its text.
	Domain, Operation, Content string
}

// Text returns the event text "<domain> <operation> <content>".
func (e Entry) Text() string { return e.Domain + " " + e.Operation + " " + e.Content }

// checkEvent enforces the AAEL event rules.
func checkEvent(domain, operation, content string) error {
	for _, f := range []struct{ name, v string }{{"domain", domain}, {"operation", operation}} {
		if f.v == "" {
			return fmt.Errorf("%w: empty %s", ErrInvalidEvent, f.name)
		}
		if i := strings.IndexAny(f.v, " \t\n\v\f\r"); i >= 0 {
			return fmt.Errorf("%w: %s has white space at byte %d", ErrInvalidEvent, f.name, i)
		}
	}
	if i := strings.IndexByte(content, '\n'); i >= 0 {
		return fmt.Errorf("%w: content has a newline at byte %d", ErrInvalidEvent, i)
	}
	// The event data (8 bytes of tagged-event header plus the text) must
	// fit its u32 size field.
	if n := len(domain) + len(operation) + len(content) + 2; uint64(n)+8 > math.MaxUint32 {
		return fmt.Errorf("%w: event text is %d bytes", ErrInvalidEvent, n)
	}
	return nil
}

// splitText splits an event text at its first two spaces.
func splitText(text string) (domain, operation, content string, ok bool) {
	domain, rest, ok1 := strings.Cut(text, " ")
	operation, content, ok2 := strings.Cut(rest, " ")
	return domain, operation, content, ok1 && ok2
}

// taggedEvent returns the TCG_PCClientTaggedEvent of an event text.
func taggedEvent(text string) []byte {
	b := make([]byte, 0, 8+len(text))
	b = binary.LittleEndian.AppendUint32(b, TaggedEventID)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(text)))
	return append(b, text...)
}

// encodeEntry returns the TCG_PCR_EVENT2 bytes of an event text and the
// digest to extend.
func encodeEntry(register uint32, alg Algorithm, text string) (entry, digest []byte) {
	data := taggedEvent(text)
	digest = alg.sum(data)
	b := make([]byte, 0, 4*4+2+len(digest)+len(data))
	b = binary.LittleEndian.AppendUint32(b, register)
	b = binary.LittleEndian.AppendUint32(b, EventTag)
	b = binary.LittleEndian.AppendUint32(b, 1)
	b = binary.LittleEndian.AppendUint16(b, uint16(alg))
	b = append(b, digest...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...), digest
}

// Parse parses a whole AAEL: entries back to back, as Log writes them.
// Every entry must be an AAEL tagged event with one digest of a known
// algorithm, and that digest must match the event. Errors wrap
// ErrMalformed and give the entry's offset.
func Parse(b []byte) ([]Entry, error) {
	var out []Entry
	for off := 0; off < len(b); {
		e, n, err := parseEntry(b[off:])
		if err != nil {
			return nil, fmt.Errorf("%w: entry %d at offset %d: %w", ErrMalformed, len(out), off, err)
		}
		out = append(out, e)
		off += n
	}
	return out, nil
}

// ReadFile reads and parses the AAEL at path. A missing file is an empty
// log.
func ReadFile(path string) ([]Entry, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read AAEL: %w", err)
	}
	es, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("parse AAEL %s: %w", path, err)
	}
	return es, nil
}

// parseEntry parses the entry at the start of b and returns its size.
func parseEntry(b []byte) (Entry, int, error) {
	r := reader{b: b}
	var e Entry
	e.Register = r.u32()
	typ := r.u32()
	count := r.u32()
	if r.short {
		return e, 0, errors.New("truncated header")
	}
	if typ != EventTag {
		return e, 0, fmt.Errorf("event type %#x, want EV_EVENT_TAG %#x", typ, EventTag)
	}
	if count != 1 {
		return e, 0, fmt.Errorf("%d digests, want 1", count)
	}
	e.Algorithm = Algorithm(r.u16())
	size := e.Algorithm.Size()
	if !r.short && size == 0 {
		return e, 0, fmt.Errorf("unknown digest algorithm %#04x", uint16(e.Algorithm))
	}
	e.Digest = bytes.Clone(r.bytes(size))
	data := r.bytes(int(r.u32()))
	if r.short {
		return e, 0, errors.New("truncated entry")
	}
	if !bytes.Equal(e.Algorithm.sum(data), e.Digest) {
		return e, 0, fmt.Errorf("%s digest does not match the event data", e.Algorithm)
	}
	d := reader{b: data}
	id := d.u32()
	text := d.bytes(int(d.u32()))
	switch {
	case d.short:
		return e, 0, errors.New("truncated tagged event")
	case id != TaggedEventID:
		return e, 0, fmt.Errorf("tagged event id %#x, want AAEL %#x", id, TaggedEventID)
	case len(d.b) != 0:
		return e, 0, fmt.Errorf("%d bytes after the tagged event", len(d.b))
	}
	var ok bool
	e.Domain, e.Operation, e.Content, ok = splitText(string(text))
	if !ok {
		return e, 0, fmt.Errorf("event text %q is not \"<domain> <operation> <content>\"", text)
	}
	return e, len(b) - len(r.b), nil
}

// reader consumes little-endian fields; once short, it stays short and
// returns zero values.
type reader struct {
	b     []byte
	short bool
}

func (r *reader) bytes(n int) []byte {
	if r.short || n < 0 || n > len(r.b) {
		r.short = true
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.bytes(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}
