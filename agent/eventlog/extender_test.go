package eventlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/test/swtpm"
)

func TestTDXRegisterMapping(t *testing.T) {
	// Upstream's table: PCR 1, 7 → 1; 2-6 → 2; 8-15 → 3; else → 4.
	want := map[uint64]uint32{
		0: 4, 1: 1, 2: 2, 3: 2, 4: 2, 5: 2, 6: 2, 7: 1,
		8: 3, 9: 3, 10: 3, 11: 3, 12: 3, 13: 3, 14: 3, 15: 3,
		16: 4, 17: 4, 18: 4, 23: 4, 24: 4, 1 << 40: 4,
	}
	for pcr, mr := range want {
		if got, err := (TDXExtender{}).Register(pcr); err != nil || got != mr {
			t.Errorf("Register(%d) = %d, %v; want %d", pcr, got, err, mr)
		}
	}
}

// fakeSysfs makes a TDX measurements directory with four RTMR attributes
// holding distinct values.
func fakeSysfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for i := range 4 {
		if err := os.WriteFile(filepath.Join(dir, "rtmr"+string(rune('0'+i))+":sha384"), bytes.Repeat([]byte{byte(0xa0 + i)}, 48), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestTDXExtender(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		pcr    uint64
		attr   string
		digest []byte
		want   []byte
	}{
		{"sha384 into RTMR3", 17, "rtmr3:sha384", bytes.Repeat([]byte{7}, 48), bytes.Repeat([]byte{7}, 48)},
		{"sha256 zero-padded into RTMR0", 7, "rtmr0:sha384", bytes.Repeat([]byte{1}, 32), append(bytes.Repeat([]byte{1}, 32), make([]byte, 16)...)},
		{"sha512 truncated into RTMR2", 9, "rtmr2:sha384", bytes.Repeat([]byte{2}, 64), bytes.Repeat([]byte{2}, 48)},
		{"RTMR1", 3, "rtmr1:sha384", bytes.Repeat([]byte{3}, 48), bytes.Repeat([]byte{3}, 48)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := fakeSysfs(t)
			x := TDXExtender{Dir: dir}
			if err := x.Extend(ctx, tc.pcr, tc.digest); err != nil {
				t.Fatal(err)
			}
			for i := range 4 {
				name := "rtmr" + string(rune('0'+i)) + ":sha384"
				got, _ := os.ReadFile(filepath.Join(dir, name))
				want := bytes.Repeat([]byte{byte(0xa0 + i)}, 48)
				if name == tc.attr {
					want = tc.want
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s holds %x, want %x", name, got, want)
				}
			}
			if v, err := x.Read(ctx, tc.pcr); err != nil || !bytes.Equal(v, tc.want) {
				t.Errorf("Read: %x, %v", v, err)
			}
		})
	}
	t.Run("no sysfs", func(t *testing.T) {
		dir := t.TempDir()
		x := TDXExtender{Dir: dir}
		if err := x.Extend(ctx, 17, make([]byte, 48)); err == nil {
			t.Error("Extend without the attribute succeeded")
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("Extend created %v", ents)
		}
		if _, err := x.Read(ctx, 17); err == nil {
			t.Error("Read without the attribute succeeded")
		}
	})
	t.Run("short register", func(t *testing.T) {
		dir := fakeSysfs(t)
		os.WriteFile(filepath.Join(dir, "rtmr3:sha384"), make([]byte, 47), 0o600)
		if _, err := (TDXExtender{Dir: dir}).Read(ctx, 17); err == nil {
			t.Error("Read of a 47-byte RTMR succeeded")
		}
	})
}

// TestTDXLog: an event through the Log lands in RTMR3 as the SHA-384 of
// its tagged event, and the entry names CC MR 4.
func TestTDXLog(t *testing.T) {
	dir := fakeSysfs(t)
	path := filepath.Join(t.TempDir(), "eventlog")
	l := openLog(t, path, TDXExtender{Dir: dir})
	if err := l.Extend(context.Background(), "domain", "operation", "content", nil); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(dir, "rtmr3:sha384"))
	if want := unhex(t, upstreamDigests[SHA384]); !bytes.Equal(got, want) {
		t.Errorf("written to RTMR3: %x, want %x", got, want)
	}
	if log, _ := os.ReadFile(path); !bytes.Equal(log, goldenEntry(t, "04000000", "0c00", SHA384)) {
		t.Errorf("log %x", log)
	}
}

func TestTPMExtenderRange(t *testing.T) {
	if _, err := (TPMExtender{}).Register(24); err == nil {
		t.Error("Register(24) succeeded")
	}
	if mr, err := (TPMExtender{}).Register(23); err != nil || mr != 23 {
		t.Errorf("Register(23) = %d, %v", mr, err)
	}
	if err := (TPMExtender{}).Extend(context.Background(), 16, make([]byte, 48)); err == nil {
		t.Error("Extend with a 48-byte digest succeeded")
	}
}

func openSWTPM(t *testing.T) tpm.PCRBank {
	t.Helper()
	sw := swtpm.Start(t)
	c, err := tpm.OpenTransport(context.Background(), sw.Device())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return tpm.PCRBank{TPM: c}
}

// TestTPMLog extends real swtpm PCRs through the log and checks each
// against SHA-256(old ‖ digest) with the digest computed here from the
// hand-built tagged event.
func TestTPMLog(t *testing.T) {
	ctx := context.Background()
	bank := openSWTPM(t)
	path := filepath.Join(t.TempDir(), "eventlog")
	l, err := Open(ctx, path, Options{Extender: TPMExtender{PCRs: bank}, InitPCR: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, pcr := range []uint64{16, 23, 8} {
		old, err := bank.ReadPCR(ctx, int(pcr))
		if err != nil {
			t.Fatal(err)
		}
		p := pcr
		if err := l.Extend(ctx, "domain", "operation", "content", &p); err != nil {
			t.Fatalf("PCR %d: %v", pcr, err)
		}
		now, err := bank.ReadPCR(ctx, int(pcr))
		if err != nil {
			t.Fatal(err)
		}
		digest := sha256.Sum256(unhex(t, taggedHex))
		want := sha256.Sum256(append(bytes.Clone(old), digest[:]...))
		if !bytes.Equal(now, want[:]) {
			t.Errorf("PCR %d: %x, want SHA-256(%x ‖ %x) = %x", pcr, now, old, digest, want)
		}
	}
	es, err := l.Entries()
	if err != nil || len(es) != 3 {
		t.Fatalf("entries %+v, %v", es, err)
	}
	log, _ := os.ReadFile(path)
	if want := goldenEntry(t, "10000000", "0b00", SHA256); !bytes.Equal(log[:len(want)], want) {
		t.Errorf("first entry %x, want %x", log[:len(want)], want)
	}
	for i, mr := range []uint32{16, 23, 8} {
		if es[i].Register != mr || es[i].Algorithm != SHA256 {
			t.Errorf("entry %d: %+v", i, es[i])
		}
	}
}

// TestTPMDefaultPCR17: upstream's default, PCR 17, is a DRTM PCR that a
// TPM does not let locality 0 extend (TPM_RC_LOCALITY). The failed extend
// leaves no entry and no write-ahead record: the PCR was read back and had
// not changed.
func TestTPMDefaultPCR17(t *testing.T) {
	ctx := context.Background()
	bank := openSWTPM(t)
	dir := t.TempDir()
	l := openLog(t, filepath.Join(dir, "eventlog"), TPMExtender{PCRs: bank})
	old, err := bank.ReadPCR(ctx, 17)
	if err != nil {
		t.Fatal(err)
	}
	err = l.Extend(ctx, "domain", "operation", "content", nil)
	if err == nil || !strings.Contains(err.Error(), "TPM_RC_LOCALITY") {
		t.Fatalf("Extend PCR 17: %v, want TPM_RC_LOCALITY", err)
	}
	now, err := bank.ReadPCR(ctx, 17)
	if err != nil {
		t.Fatal(err)
	}
	if es, _ := l.Entries(); !bytes.Equal(old, now) || len(es) != 0 {
		t.Errorf("PCR 17 %x -> %x, %d entries", old, now, len(es))
	}
	noWAL(t, dir)
}

// TestTPMRecovery: a crash after the PCR extend and before the log write
// (simulated by hand: record written, PCR extended, log untouched) is
// recovered by Open with exactly one entry and no second extend.
func TestTPMRecovery(t *testing.T) {
	ctx := context.Background()
	bank := openSWTPM(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "eventlog")
	const pcr = 23
	old, err := bank.ReadPCR(ctx, pcr)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(unhex(t, taggedHex))
	expected := sha256.Sum256(append(bytes.Clone(old), digest[:]...))
	rec := binary.BigEndian.AppendUint64(nil, 0)
	rec = append(append(rec, expected[:]...), "domain operation content"...)
	if err := os.WriteFile(filepath.Join(dir, WALName), rec, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := bank.ExtendPCR(ctx, pcr, digest[:]); err != nil {
		t.Fatal(err)
	}
	l, err := Open(ctx, path, Options{Extender: TPMExtender{PCRs: bank}, InitPCR: pcr})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now, err := bank.ReadPCR(ctx, pcr)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(now, expected[:]) {
		t.Errorf("PCR %d %x after recovery, want %x (extended once)", pcr, now, expected)
	}
	log, _ := os.ReadFile(path)
	if want := goldenEntry(t, "17000000", "0b00", SHA256); !bytes.Equal(log, want) {
		t.Errorf("log\n got %x\nwant %x", log, want)
	}
	noWAL(t, dir)
}

// TestTPMAttesterPCRs: the attester's ReadPCR/ExtendPCR, which share its
// connection, serve as the log's PCRs.
func TestTPMAttesterPCRs(t *testing.T) {
	ctx := context.Background()
	sw := swtpm.Start(t)
	a, err := tpm.Open(ctx, tpm.Options{Device: sw.Device()})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	l := openLog(t, filepath.Join(t.TempDir(), "eventlog"), TPMExtender{PCRs: a})
	old, err := a.ReadPCR(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	p := uint64(16)
	if err := l.Extend(ctx, "domain", "operation", "content", &p); err != nil {
		t.Fatal(err)
	}
	now, err := a.ReadPCR(ctx, 16)
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256(unhex(t, taggedHex))
	if want := sha256.Sum256(append(old, digest[:]...)); !bytes.Equal(now, want[:]) {
		t.Errorf("PCR 16 %x, want %x", now, want)
	}
	// The quote covers the new value.
	if _, err := a.Evidence(ctx, []byte("nonce")); err != nil {
		t.Errorf("Evidence after extend: %v", err)
	}
	if _, err := a.ReadPCR(ctx, 24); err == nil {
		t.Error("ReadPCR(24) succeeded")
	}
	if err := a.ExtendPCR(ctx, 16, make([]byte, 20)); err == nil {
		t.Error("ExtendPCR with a 20-byte digest succeeded")
	}
}
