package eventlog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// DefaultPath is upstream's AAEL file.
const DefaultPath = "/run/attestation-agent/eventlog"

// DefaultPCR is the PCR an event goes to when the caller names none
// (upstream's eventlog_config.init_pcr default).
const DefaultPCR uint64 = 17

// WALName is the name of the write-ahead record, in the log's directory.
const WALName = ".wal_event_entry"

// Options configures Open.
type Options struct {
	// Extender owns the registers. Required.
	Extender Extender
	// InitPCR is the PCR used when Extend is given none. Zero means
	// DefaultPCR (PCR 0 belongs to firmware and cannot be the default).
	InitPCR uint64
}

// Log is an open AAEL. It is safe for concurrent use; Extend calls are
// serialized.
type Log struct {
	path    string
	wal     string
	ext     Extender
	alg     Algorithm
	initPCR uint64

	mu     sync.Mutex
	f      *os.File
	end    int64 // where the next entry goes
	closed bool
}

// Open opens (creating it and its directory if needed) the AAEL at path,
// empty meaning DefaultPath, locks it against other writers and resolves a
// write-ahead record left by a crash (see the package documentation). It
// fails if the record cannot be resolved consistently; the log is then
// unusable until an operator removes the record.
func Open(ctx context.Context, path string, opts Options) (*Log, error) {
	if path == "" {
		path = DefaultPath
	}
	if opts.Extender == nil {
		return nil, fmt.Errorf("open AAEL %s: no extender", path)
	}
	l := &Log{
		path:    path,
		wal:     filepath.Join(filepath.Dir(path), WALName),
		ext:     opts.Extender,
		alg:     opts.Extender.Algorithm(),
		initPCR: opts.InitPCR,
	}
	if l.initPCR == 0 {
		l.initPCR = DefaultPCR
	}
	if l.alg.Size() == 0 {
		return nil, fmt.Errorf("open AAEL %s: extender has unsupported %s", path, l.alg)
	}
	if _, err := l.ext.Register(l.initPCR); err != nil {
		return nil, fmt.Errorf("open AAEL %s: default PCR: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("open AAEL: create directory: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open AAEL: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("open AAEL %s: lock: %w (is another agent running?)", path, err)
	}
	l.f = f
	// A temporary record is one whose rename never happened: its extend
	// never started.
	if err := os.Remove(l.wal + ".tmp"); err != nil && !errors.Is(err, os.ErrNotExist) {
		f.Close()
		return nil, fmt.Errorf("open AAEL %s: %w", path, err)
	}
	if err := l.recover(ctx); err != nil {
		f.Close()
		return nil, fmt.Errorf("open AAEL %s: %w", path, err)
	}
	return l, nil
}

// Path returns the log file's path.
func (l *Log) Path() string { return l.path }

// Algorithm returns the algorithm entries are digested with.
func (l *Log) Algorithm() Algorithm { return l.alg }

// Close closes the log and releases its lock.
func (l *Log) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close AAEL %s: %w", l.path, err)
	}
	return nil
}

// Extend records the event "<domain> <operation> <content>" and extends
// its digest into the register pcr maps to; nil pcr means the default PCR.
// Errors wrap ErrInvalidEvent for an event that breaks the AAEL rules.
// When Extend fails after the register was extended, the entry is written
// by the next Extend or Open.
func (l *Log) Extend(ctx context.Context, domain, operation, content string, pcr *uint64) error {
	if err := checkEvent(domain, operation, content); err != nil {
		return fmt.Errorf("extend runtime measurement: %w", err)
	}
	p := l.initPCR
	if pcr != nil {
		p = *pcr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return fmt.Errorf("extend runtime measurement: AAEL %s is closed", l.path)
	}
	if err := l.recover(ctx); err != nil {
		return fmt.Errorf("extend runtime measurement: %w", err)
	}
	if err := l.extend(ctx, domain+" "+operation+" "+content, p); err != nil {
		return fmt.Errorf("extend runtime measurement (PCR %d): %w", p, err)
	}
	return nil
}

// extend runs the write-ahead protocol for one event.
func (l *Log) extend(ctx context.Context, text string, pcr uint64) error {
	mr, err := l.ext.Register(pcr)
	if err != nil {
		return err
	}
	entry, digest := encodeEntry(mr, l.alg, text)
	cur, err := l.read(ctx, pcr)
	if err != nil {
		return err
	}
	want := l.alg.sum(cur, digest)
	rec := walRecord{offset: l.end, expected: want, text: text, pcr: pcr}
	if err := l.writeWAL(rec); err != nil {
		return err
	}
	if err := l.ext.Extend(ctx, pcr, digest); err != nil {
		// Whether it happened is unknown (a lost response): look.
		now, rerr := l.read(context.WithoutCancel(ctx), pcr)
		switch {
		case rerr != nil:
			return errors.Join(fmt.Errorf("extend register: %w", err),
				fmt.Errorf("read it back: %w; the write-ahead record %s stays for recovery", rerr, l.wal))
		case bytes.Equal(now, cur):
			// Not extended: drop the record.
			if rerr := os.Remove(l.wal); rerr != nil {
				return errors.Join(fmt.Errorf("extend register: %w", err), fmt.Errorf("remove write-ahead record: %w", rerr))
			}
			return fmt.Errorf("extend register: %w", err)
		case !bytes.Equal(now, want):
			return errors.Join(fmt.Errorf("extend register: %w", err),
				fmt.Errorf("the register changed to neither the old nor the expected value; the write-ahead record %s stays", l.wal))
		}
		// Extended after all: log it.
	}
	return l.commit(entry, rec.offset)
}

// commit writes an entry at offset, makes it durable and removes the
// write-ahead record.
func (l *Log) commit(entry []byte, offset int64) error {
	if _, err := l.f.WriteAt(entry, offset); err != nil {
		return fmt.Errorf("write AAEL entry: %w", err)
	}
	end := offset + int64(len(entry))
	if err := l.f.Truncate(end); err != nil {
		return fmt.Errorf("write AAEL entry: %w", err)
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("write AAEL entry: sync: %w", err)
	}
	l.end = end
	if err := os.Remove(l.wal); err != nil {
		return fmt.Errorf("remove write-ahead record: %w", err)
	}
	return nil
}

// read reads the register pcr maps to and checks its size.
func (l *Log) read(ctx context.Context, pcr uint64) ([]byte, error) {
	v, err := l.ext.Read(ctx, pcr)
	if err != nil {
		return nil, fmt.Errorf("read register: %w", err)
	}
	if len(v) != l.alg.Size() {
		return nil, fmt.Errorf("read register: %d bytes, want %d for %s", len(v), l.alg.Size(), l.alg)
	}
	return v, nil
}

// recover resolves a write-ahead record, if any, and sets where the next
// entry goes.
func (l *Log) recover(ctx context.Context) error {
	size, err := l.f.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("find end of log: %w", err)
	}
	raw, err := os.ReadFile(l.wal)
	if errors.Is(err, os.ErrNotExist) {
		l.end = size
		return nil
	}
	if err != nil {
		return fmt.Errorf("read write-ahead record: %w", err)
	}
	rec, err := parseWAL(raw, l.alg.Size(), l.initPCR)
	if err != nil {
		return fmt.Errorf("write-ahead record %s: %w; remove it to start anyway", l.wal, err)
	}
	if err := checkEvent(splitText3(rec.text)); err != nil {
		return fmt.Errorf("write-ahead record %s: %w; remove it to start anyway", l.wal, err)
	}
	mr, err := l.ext.Register(rec.pcr)
	if err != nil {
		return fmt.Errorf("write-ahead record %s: %w", l.wal, err)
	}
	entry, digest := encodeEntry(mr, l.alg, rec.text)
	if rec.offset < 0 || rec.offset > size || size > rec.offset+int64(len(entry)) {
		return fmt.Errorf("write-ahead record %s: entry at offset %d (%d bytes) does not fit the %d-byte log, which is corrupted", l.wal, rec.offset, len(entry), size)
	}
	cur, err := l.read(ctx, rec.pcr)
	if err != nil {
		return fmt.Errorf("recover write-ahead record: %w", err)
	}
	if !bytes.Equal(cur, rec.expected) {
		// Not extended yet, if extending now yields the expected value.
		if !bytes.Equal(l.alg.sum(cur, digest), rec.expected) {
			return fmt.Errorf("recover write-ahead record %s: register for PCR %d holds neither the expected value nor its predecessor: the log is corrupted or another party extended the register", l.wal, rec.pcr)
		}
		if err := l.ext.Extend(ctx, rec.pcr, digest); err != nil {
			return fmt.Errorf("recover write-ahead record: extend register: %w", err)
		}
	}
	if err := l.commit(entry, rec.offset); err != nil {
		return fmt.Errorf("recover write-ahead record: %w", err)
	}
	return nil
}

// walRecord is the write-ahead record of one event.
type walRecord struct {
	offset   int64
	expected []byte
	text     string
	pcr      uint64
}

// encode returns the record in upstream's layout, with "\n<pcr>" after the
// text when the PCR is not the default.
func (r walRecord) encode(initPCR uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, uint64(r.offset))
	b = append(b, r.expected...)
	b = append(b, r.text...)
	if r.pcr != initPCR {
		b = append(b, '\n')
		b = strconv.AppendUint(b, r.pcr, 10)
	}
	return b
}

// parseWAL parses a record written by upstream or by encode.
func parseWAL(b []byte, size int, initPCR uint64) (walRecord, error) {
	if len(b) < 8+size {
		return walRecord{}, fmt.Errorf("%d bytes, shorter than its %d-byte header", len(b), 8+size)
	}
	off := binary.BigEndian.Uint64(b)
	if off > 1<<62 {
		return walRecord{}, fmt.Errorf("offset %d is out of range", off)
	}
	r := walRecord{offset: int64(off), expected: bytes.Clone(b[8 : 8+size]), text: string(b[8+size:]), pcr: initPCR}
	if text, pcr, ok := strings.Cut(r.text, "\n"); ok {
		p, err := strconv.ParseUint(pcr, 10, 64)
		if err != nil {
			return walRecord{}, fmt.Errorf("PCR suffix %q: %w", pcr, err)
		}
		r.text, r.pcr = text, p
	}
	return r, nil
}

// splitText3 splits an event text for checkEvent; a text without two
// spaces yields an empty operation, which checkEvent refuses.
func splitText3(text string) (domain, operation, content string) {
	domain, operation, content, _ = splitText(text)
	return domain, operation, content
}

// writeWAL writes the record to a temporary file, syncs it and renames it
// into place, so a crash leaves either no record or a whole one.
func (l *Log) writeWAL(r walRecord) error {
	tmp := l.wal + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write write-ahead record: %w", err)
	}
	_, err = f.Write(r.encode(l.initPCR))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, l.wal)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write write-ahead record %s: %w", l.wal, err)
	}
	return nil
}

// Entries reads and parses the log.
func (l *Log) Entries() ([]Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, fmt.Errorf("read AAEL %s: closed", l.path)
	}
	b := make([]byte, l.end)
	if _, err := l.f.ReadAt(b, 0); err != nil {
		return nil, fmt.Errorf("read AAEL %s: %w", l.path, err)
	}
	es, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("read AAEL %s: %w", l.path, err)
	}
	return es, nil
}
