package eventlog

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Extender is a platform's bank of runtime measurement registers.
// Registers are addressed by PCR index; the Extender maps the index to its
// platform register.
type Extender interface {
	// Algorithm is the bank's hash algorithm; entries are digested with it
	// (upstream's ccel_hash_algorithm).
	Algorithm() Algorithm
	// Register returns the target measurement register an entry for pcr
	// records (upstream's pcr_to_ccmr), or an error if the platform has no
	// register for pcr.
	Register(pcr uint64) (uint32, error)
	// Read returns the current value of the register pcr maps to.
	Read(ctx context.Context, pcr uint64) ([]byte, error)
	// Extend extends digest, Algorithm().Size() bytes, into the register
	// pcr maps to: register := H(register ‖ digest).
	Extend(ctx context.Context, pcr uint64, digest []byte) error
}

// PCRs is a TPM's SHA-256 PCR bank. *tpm.Attester and tpm.PCRBank (package
// attester/tpm) implement it.
type PCRs interface {
	ReadPCR(ctx context.Context, pcr int) ([]byte, error)
	ExtendPCR(ctx context.Context, pcr int, digest []byte) error
}

// TPMExtender extends a TPM's SHA-256 PCRs; the register an entry records
// is the PCR index, 0-23 (as upstream's vTPM attesters).
type TPMExtender struct {
	PCRs PCRs
}

// tpmPCRs is the number of PCRs of a PC-client TPM.
const tpmPCRs = 24

// Algorithm returns SHA256.
func (TPMExtender) Algorithm() Algorithm { return SHA256 }

// Register returns pcr itself, if it is 0-23.
func (TPMExtender) Register(pcr uint64) (uint32, error) {
	if pcr >= tpmPCRs {
		return 0, fmt.Errorf("TPM has no PCR %d (0-%d)", pcr, tpmPCRs-1)
	}
	return uint32(pcr), nil
}

// Read reads SHA-256 PCR pcr.
func (x TPMExtender) Read(ctx context.Context, pcr uint64) ([]byte, error) {
	if _, err := x.Register(pcr); err != nil {
		return nil, err
	}
	return x.PCRs.ReadPCR(ctx, int(pcr))
}

// Extend extends digest into SHA-256 PCR pcr.
func (x TPMExtender) Extend(ctx context.Context, pcr uint64, digest []byte) error {
	if _, err := x.Register(pcr); err != nil {
		return err
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("extend PCR %d: digest is %d bytes, want %d", pcr, len(digest), sha256.Size)
	}
	return x.PCRs.ExtendPCR(ctx, int(pcr), digest)
}

// DefaultTDXMeasurements is the Linux (6.16 and later) sysfs directory of
// a TDX guest's measurement registers.
const DefaultTDXMeasurements = "/sys/devices/virtual/misc/tdx_guest/measurements"

// rtmrSize is the size of an RTMR, a SHA-384 value.
const rtmrSize = 48

// TDXExtender extends a TDX guest's RTMRs through the kernel's sysfs
// measurement attributes. Entries record the CC MR index of upstream's
// mapping; the RTMR is that index minus one.
type TDXExtender struct {
	// Dir is the measurements directory; empty means
	// DefaultTDXMeasurements. Tests point it at a fake.
	Dir string
}

// Algorithm returns SHA384.
func (TDXExtender) Algorithm() Algorithm { return SHA384 }

// Register maps pcr to a CC MR index as upstream's TDX attester (after
// td-shim and the UEFI CC measurement register mapping): PCR 1 and 7 → 1
// (RTMR0), 2-6 → 2 (RTMR1), 8-15 → 3 (RTMR2), anything else, including 0
// and the default 17, → 4 (RTMR3).
func (TDXExtender) Register(pcr uint64) (uint32, error) {
	switch {
	case pcr == 1 || pcr == 7:
		return 1, nil
	case pcr >= 2 && pcr <= 6:
		return 2, nil
	case pcr >= 8 && pcr <= 15:
		return 3, nil
	}
	return 4, nil
}

// attr returns the sysfs attribute of the RTMR pcr maps to.
func (x TDXExtender) attr(pcr uint64) string {
	dir := x.Dir
	if dir == "" {
		dir = DefaultTDXMeasurements
	}
	mr, _ := x.Register(pcr)
	return filepath.Join(dir, fmt.Sprintf("rtmr%d:sha384", mr-1))
}

// Read reads the RTMR pcr maps to.
func (x TDXExtender) Read(ctx context.Context, pcr uint64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p := x.attr(pcr)
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("read RTMR: %w", err)
	}
	defer f.Close()
	v, err := io.ReadAll(io.LimitReader(f, rtmrSize+1))
	if err != nil {
		return nil, fmt.Errorf("read RTMR %s: %w", p, err)
	}
	if len(v) != rtmrSize {
		return nil, fmt.Errorf("read RTMR %s: got %d bytes, want %d", p, len(v), rtmrSize)
	}
	return v, nil
}

// Extend writes the digest, zero-padded or truncated to 48 bytes as
// upstream, to the RTMR's sysfs attribute in one write; the kernel extends
// the RTMR with it.
func (x TDXExtender) Extend(ctx context.Context, pcr uint64, digest []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var data [rtmrSize]byte
	copy(data[:], digest)
	p := x.attr(pcr)
	// No O_CREAT: a missing attribute means no kernel support, which must
	// not turn into a stray file.
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("extend RTMR: %w", err)
	}
	n, err := f.Write(data[:])
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != rtmrSize {
		err = io.ErrShortWrite
	}
	if err != nil {
		return fmt.Errorf("extend RTMR %s: %w", p, err)
	}
	return nil
}
