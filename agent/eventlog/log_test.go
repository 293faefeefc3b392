package eventlog

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeRegs is an in-memory SHA-384 register bank with TDX's mapping that
// counts extends. failBefore makes the next Extend fail without
// extending; failAfter makes it fail after extending.
type fakeRegs struct {
	mu         sync.Mutex
	regs       map[uint32][]byte
	extends    int
	failBefore error
	failAfter  error
	inFlight   int // concurrent Extend calls, to catch overlap
	overlapped bool
}

func newFake() *fakeRegs { return &fakeRegs{regs: map[uint32][]byte{}} }

func (f *fakeRegs) Algorithm() Algorithm { return SHA384 }

func (f *fakeRegs) Register(pcr uint64) (uint32, error) { return TDXExtender{}.Register(pcr) }

func (f *fakeRegs) value(mr uint32) []byte {
	if v, ok := f.regs[mr]; ok {
		return v
	}
	return make([]byte, 48)
}

func (f *fakeRegs) Read(_ context.Context, pcr uint64) ([]byte, error) {
	mr, _ := f.Register(pcr)
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Clone(f.value(mr)), nil
}

func (f *fakeRegs) Extend(_ context.Context, pcr uint64, digest []byte) error {
	mr, _ := f.Register(pcr)
	f.mu.Lock()
	f.inFlight++
	if f.inFlight > 1 {
		f.overlapped = true
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.failBefore; err != nil {
		f.failBefore = nil
		return err
	}
	s := sha512.Sum384(append(f.value(mr), digest...))
	f.regs[mr] = s[:]
	f.extends++
	if err := f.failAfter; err != nil {
		f.failAfter = nil
		return err
	}
	return nil
}

func (f *fakeRegs) state() (extends int, regs map[uint32][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	regs = map[uint32][]byte{}
	for k, v := range f.regs {
		regs[k] = bytes.Clone(v)
	}
	return f.extends, regs
}

func openLog(t *testing.T, path string, x Extender) *Log {
	t.Helper()
	l, err := Open(context.Background(), path, Options{Extender: x})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// replay folds a log's digests into registers, as a verifier does.
func replay(es []Entry) map[uint32][]byte {
	regs := map[uint32][]byte{}
	for _, e := range es {
		v, ok := regs[e.Register]
		if !ok {
			v = make([]byte, 48)
		}
		s := sha512.Sum384(append(v, e.Digest...))
		regs[e.Register] = s[:]
	}
	return regs
}

func noWAL(t *testing.T, dir string) {
	t.Helper()
	for _, n := range []string{WALName, WALName + ".tmp"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is left behind (%v)", n, err)
		}
	}
}

func TestExtendWritesGoldenEntry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "eventlog")
	f := newFake()
	l := openLog(t, path, f)
	if err := l.Extend(context.Background(), "domain", "operation", "content", nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Default PCR 17 → CC MR 4.
	if want := goldenEntry(t, "04000000", "0c00", SHA384); !bytes.Equal(got, want) {
		t.Fatalf("log\n got %x\nwant %x", got, want)
	}
	n, regs := f.state()
	digest := unhex(t, upstreamDigests[SHA384])
	want := sha512.Sum384(append(make([]byte, 48), digest...))
	if n != 1 || !bytes.Equal(regs[4], want[:]) {
		t.Errorf("%d extends, MR4 %x, want 1 and %x", n, regs[4], want)
	}
	noWAL(t, filepath.Dir(path))

	// A second event for PCR 8 (CC MR 3) appends, naming MR 3.
	pcr := uint64(8)
	if err := l.Extend(context.Background(), "d2", "op2", "c 2", &pcr); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[1].Register != 3 || es[1].Text() != "d2 op2 c 2" {
		t.Fatalf("entries %+v", es)
	}
	_, regs = f.state()
	if r := replay(es); !bytes.Equal(r[3], regs[3]) || !bytes.Equal(r[4], regs[4]) {
		t.Errorf("log does not replay to the registers")
	}

	// Reopening continues at the end.
	l.Close()
	l = openLog(t, path, f)
	if err := l.Extend(context.Background(), "d3", "op3", "", nil); err != nil {
		t.Fatal(err)
	}
	if es, err := ReadFile(path); err != nil || len(es) != 3 || es[2].Text() != "d3 op3 " {
		t.Fatalf("ReadFile: %+v, %v", es, err)
	}
}

func TestExtendRefusesInvalidEvents(t *testing.T) {
	dir := t.TempDir()
	f := newFake()
	l := openLog(t, filepath.Join(dir, "eventlog"), f)
	for _, ev := range [][3]string{
		{"domain", "operation", "two\nlines"},
		{"my domain", "operation", "content"},
		{"domain", "", "content"},
	} {
		err := l.Extend(context.Background(), ev[0], ev[1], ev[2], nil)
		if !errors.Is(err, ErrInvalidEvent) {
			t.Errorf("Extend(%q): %v, want ErrInvalidEvent", ev, err)
		}
	}
	if n, _ := f.state(); n != 0 {
		t.Errorf("%d extends", n)
	}
	if es, err := l.Entries(); err != nil || len(es) != 0 {
		t.Errorf("entries %v, %v", es, err)
	}
	noWAL(t, dir)
}

func TestExtendConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "eventlog")
	f := newFake()
	l := openLog(t, path, f)
	const n = 32
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			pcr := uint64(i % 3 * 5) // PCRs 0, 5, 10: MRs 4, 2, 3
			errs <- l.Extend(context.Background(), "test", "op", fmt.Sprintf("event %d", i), &pcr)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	es, err := ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != n {
		t.Fatalf("%d entries, want %d", len(es), n)
	}
	seen := map[string]bool{}
	for _, e := range es {
		seen[e.Content] = true
	}
	if len(seen) != n {
		t.Errorf("%d distinct events", len(seen))
	}
	extends, regs := f.state()
	if extends != n || f.overlapped {
		t.Errorf("%d extends (overlapped %v)", extends, f.overlapped)
	}
	// The log order is the extend order: replay reproduces every register.
	r := replay(es)
	for mr, v := range regs {
		if !bytes.Equal(r[mr], v) {
			t.Errorf("MR %d: replay %x, register %x", mr, r[mr], v)
		}
	}
	noWAL(t, dir)
}

func TestOpenLocks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eventlog")
	openLog(t, path, newFake())
	if l, err := Open(context.Background(), path, Options{Extender: newFake()}); err == nil {
		l.Close()
		t.Fatal("a second Open of the same log succeeded")
	}
}

func TestOpenOptions(t *testing.T) {
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "l"), Options{}); err == nil {
		t.Error("Open without an extender succeeded")
	}
	// A TPM has no PCR 30.
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "l"), Options{Extender: TPMExtender{}, InitPCR: 30})
	if err == nil || !strings.Contains(err.Error(), "no PCR 30") {
		t.Errorf("Open with InitPCR 30: %v", err)
	}
}

// wal builds a write-ahead record by hand from upstream's layout.
func wal(offset uint64, expected []byte, text string) []byte {
	b := binary.BigEndian.AppendUint64(nil, offset)
	return append(append(b, expected...), text...)
}

// crashSetup prepares a log directory as a crashed agent leaves it: prior
// holds the log's earlier entries, the event "dom op crash" is pending for
// the default PCR (MR 4).
type crashSetup struct {
	dir, path string
	f         *fakeRegs
	prior     []byte
	entry     []byte // the pending entry, by hand
	digest    []byte
	before    []byte // MR 4 before the pending extend
	expected  []byte // MR 4 after it
}

func newCrash(t *testing.T) *crashSetup {
	t.Helper()
	c := &crashSetup{dir: t.TempDir(), f: newFake()}
	c.path = filepath.Join(c.dir, "eventlog")
	// One earlier event, logged and extended normally.
	l := openLog(t, c.path, c.f)
	if err := l.Extend(context.Background(), "dom", "op", "first", nil); err != nil {
		t.Fatal(err)
	}
	l.Close()
	var err error
	if c.prior, err = os.ReadFile(c.path); err != nil {
		t.Fatal(err)
	}
	tagged := append(unhex(t, "4c454141 0c000000"), "dom op crash"...)
	d := sha512.Sum384(tagged)
	c.digest = d[:]
	c.entry = append(append(unhex(t, "04000000 06000000 01000000 0c00"), c.digest...), append(unhex(t, "14000000"), tagged...)...)
	_, regs := c.f.state()
	c.before = regs[4]
	e := sha512.Sum384(append(bytes.Clone(c.before), c.digest...))
	c.expected = e[:]
	if err := os.WriteFile(filepath.Join(c.dir, WALName), wal(uint64(len(c.prior)), c.expected, "dom op crash"), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *crashSetup) extendByHand(t *testing.T) {
	t.Helper()
	if err := c.f.Extend(context.Background(), 17, c.digest); err != nil {
		t.Fatal(err)
	}
}

func TestRecovery(t *testing.T) {
	for _, tc := range []struct {
		name        string
		extended    bool   // the crashed agent extended the register
		logged      []byte // what it wrote of the entry
		wantExtends int    // extends Open must do
	}{
		{"extended, not logged", true, nil, 0},
		{"not extended", false, nil, 1},
		{"extended and logged, record not removed", true, []byte("whole"), 0},
		{"extended, entry half written", true, []byte("half"), 0},
		{"extended, not logged, stale temporary record", true, []byte("tmp"), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCrash(t)
			if tc.extended {
				c.extendByHand(t)
			}
			switch string(tc.logged) {
			case "whole":
				os.WriteFile(c.path, append(bytes.Clone(c.prior), c.entry...), 0o644)
			case "tmp":
				os.WriteFile(filepath.Join(c.dir, WALName+".tmp"), []byte("torn"), 0o600)
			case "half":
				os.WriteFile(c.path, append(bytes.Clone(c.prior), c.entry[:len(c.entry)/2]...), 0o644)
			}
			n0, _ := c.f.state()
			l := openLog(t, c.path, c.f)
			n1, regs := c.f.state()
			if n1-n0 != tc.wantExtends {
				t.Errorf("Open extended %d times, want %d", n1-n0, tc.wantExtends)
			}
			if !bytes.Equal(regs[4], c.expected) {
				t.Errorf("MR4 %x, want %x", regs[4], c.expected)
			}
			got, _ := os.ReadFile(c.path)
			if want := append(bytes.Clone(c.prior), c.entry...); !bytes.Equal(got, want) {
				t.Fatalf("log\n got %x\nwant %x", got, want)
			}
			noWAL(t, c.dir)
			es, err := l.Entries()
			if err != nil || len(es) != 2 || es[1].Content != "crash" {
				t.Fatalf("entries %+v, %v", es, err)
			}
			if r := replay(es); !bytes.Equal(r[4], regs[4]) {
				t.Error("recovered log does not replay")
			}
			// The log goes on after the recovered entry.
			if err := l.Extend(context.Background(), "dom", "op", "after", nil); err != nil {
				t.Fatal(err)
			}
			if es, _ := l.Entries(); len(es) != 3 || es[2].Content != "after" {
				t.Errorf("entries after recovery %+v", es)
			}
		})
	}
}

func TestRecoveryFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, c *crashSetup)
		want  string
	}{
		{"register moved on", func(t *testing.T, c *crashSetup) {
			c.extendByHand(t)
			c.extendByHand(t)
		}, "neither the expected value"},
		{"torn record", func(t *testing.T, c *crashSetup) {
			os.WriteFile(filepath.Join(c.dir, WALName), make([]byte, 20), 0o600)
		}, "shorter than its 56-byte header"},
		{"offset past the end", func(t *testing.T, c *crashSetup) {
			os.WriteFile(filepath.Join(c.dir, WALName), wal(uint64(len(c.prior))+1, c.expected, "dom op crash"), 0o600)
		}, "does not fit"},
		{"log longer than the entry", func(t *testing.T, c *crashSetup) {
			os.WriteFile(c.path, append(append(bytes.Clone(c.prior), c.entry...), 0), 0o644)
		}, "does not fit"},
		{"bad text", func(t *testing.T, c *crashSetup) {
			os.WriteFile(filepath.Join(c.dir, WALName), wal(uint64(len(c.prior)), c.expected, "nospaces"), 0o600)
		}, "invalid AAEL event"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCrash(t)
			tc.setup(t, c)
			n0, _ := c.f.state()
			l, err := Open(context.Background(), c.path, Options{Extender: c.f})
			if err == nil {
				l.Close()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open: %v, want %q", err, tc.want)
			}
			if n1, _ := c.f.state(); n1 != n0 {
				t.Errorf("Open extended %d times", n1-n0)
			}
			if _, err := os.Stat(filepath.Join(c.dir, WALName)); err != nil {
				t.Errorf("the record is gone: %v", err)
			}
		})
	}
}

// TestRecoveryNonDefaultPCR: a record for PCR 8 carries "\n8", and recovery
// checks and logs MR 3, not the default's MR 4.
func TestRecoveryNonDefaultPCR(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "eventlog")
	f := newFake()
	l := openLog(t, path, f)
	pcr := uint64(8)
	f.failAfter = errors.New("injected") // extended, then "crash"
	f.failBefore = nil
	// Make the read-back fail so the record stays, like a crash.
	ro := &readFails{fakeRegs: f}
	l.ext = ro
	ro.fail = true
	if err := l.Extend(context.Background(), "dom", "op", "eight", &pcr); err == nil {
		t.Fatal("Extend succeeded")
	}
	raw, err := os.ReadFile(filepath.Join(dir, WALName))
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	if !bytes.HasSuffix(raw, []byte("dom op eight\n8")) || binary.BigEndian.Uint64(raw) != 0 || len(raw) != 8+48+len("dom op eight\n8") {
		t.Fatalf("record %q", raw)
	}
	l.Close()
	l = openLog(t, path, f)
	es, err := l.Entries()
	if err != nil || len(es) != 1 || es[0].Register != 3 {
		t.Fatalf("entries %+v, %v", es, err)
	}
	if n, regs := f.state(); n != 1 || !bytes.Equal(replay(es)[3], regs[3]) {
		t.Errorf("%d extends; replay %x, MR3 %x", n, replay(es)[3], regs[3])
	}
	noWAL(t, dir)
}

type readFails struct {
	*fakeRegs
	fail bool
}

func (r *readFails) Read(ctx context.Context, pcr uint64) ([]byte, error) {
	r.mu.Lock()
	n := r.extends
	r.mu.Unlock()
	if r.fail && n > 0 {
		return nil, errors.New("injected read failure")
	}
	return r.fakeRegs.Read(ctx, pcr)
}

func TestExtendFailure(t *testing.T) {
	t.Run("not extended", func(t *testing.T) {
		dir := t.TempDir()
		f := newFake()
		l := openLog(t, filepath.Join(dir, "eventlog"), f)
		f.failBefore = errors.New("injected")
		if err := l.Extend(context.Background(), "d", "o", "c", nil); err == nil || !strings.Contains(err.Error(), "injected") {
			t.Fatalf("Extend: %v", err)
		}
		noWAL(t, dir)
		if es, _ := l.Entries(); len(es) != 0 {
			t.Errorf("entries %+v", es)
		}
		if err := l.Extend(context.Background(), "d", "o", "c", nil); err != nil {
			t.Fatal(err)
		}
		if es, _ := l.Entries(); len(es) != 1 {
			t.Errorf("entries %+v", es)
		}
	})
	t.Run("extended despite the error", func(t *testing.T) {
		dir := t.TempDir()
		f := newFake()
		l := openLog(t, filepath.Join(dir, "eventlog"), f)
		f.failAfter = errors.New("lost response")
		if err := l.Extend(context.Background(), "d", "o", "c", nil); err != nil {
			t.Fatalf("Extend: %v", err)
		}
		noWAL(t, dir)
		es, _ := l.Entries()
		if n, regs := f.state(); len(es) != 1 || n != 1 || !bytes.Equal(replay(es)[4], regs[4]) {
			t.Errorf("entries %+v, %d extends", es, n)
		}
	})
}
