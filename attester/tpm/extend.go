package tpm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// PCRBank reads and extends the SHA-256 PCR bank of a TPM over a raw
// channel such as one from OpenTransport. It is not safe for concurrent use
// unless the channel is. To share a TPM with an Attester, use the
// Attester's ReadPCR and ExtendPCR instead: a TPM emulator socket serves
// one client at a time.
type PCRBank struct {
	TPM transport.TPM
}

// ReadPCR returns the SHA-256 value of PCR pcr (0-23).
func (b PCRBank) ReadPCR(ctx context.Context, pcr int) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("read SHA-256 PCR %d: %w", pcr, err)
	}
	return readPCR(b.TPM, pcr)
}

// ExtendPCR extends the 32-byte digest into SHA-256 PCR pcr (0-23):
// PCR := SHA-256(PCR ‖ digest).
func (b PCRBank) ExtendPCR(ctx context.Context, pcr int, digest []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("extend SHA-256 PCR %d: %w", pcr, err)
	}
	return extendPCR(b.TPM, pcr, digest)
}

// ReadPCR returns the SHA-256 value of PCR pcr (0-23), taking its turn on
// the attester's TPM.
func (a *Attester) ReadPCR(ctx context.Context, pcr int) ([]byte, error) {
	var out []byte
	err := a.use(ctx, func(t transport.TPM) error {
		v, err := readPCR(t, pcr)
		out = v
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("TPM %s: %w", a.device, err)
	}
	return out, nil
}

// ExtendPCR extends the 32-byte digest into SHA-256 PCR pcr (0-23), taking
// its turn on the attester's TPM. If ctx is cancelled while the command is
// in flight on a socket TPM, whether the extend happened is unknown: read
// the PCR to find out.
func (a *Attester) ExtendPCR(ctx context.Context, pcr int, digest []byte) error {
	err := a.use(ctx, func(t transport.TPM) error { return extendPCR(t, pcr, digest) })
	if err != nil {
		return fmt.Errorf("TPM %s: %w", a.device, err)
	}
	return nil
}

// use runs fn on the attester's TPM connection, reconnecting if needed,
// with the same turn-taking and recovery as Evidence.
func (a *Attester) use(ctx context.Context, fn func(transport.TPM) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("wait for TPM: %w", ctx.Err())
	}
	defer func() { <-a.sem }()
	if a.closed {
		return errors.New("attester is closed")
	}
	if err := a.connect(ctx); err != nil {
		return fmt.Errorf("reconnect: %w", err)
	}
	stop := a.conn.interruptOn(ctx)
	err := fn(a.conn)
	if stop() {
		a.drop()
		return errors.Join(ctx.Err(), err)
	}
	if err != nil {
		var rc tpm2.TPMRC
		if !errors.As(err, &rc) && ctx.Err() == nil {
			a.drop()
		}
	}
	return err
}

// checkPCR rejects PCR indexes outside the 24 PCRs of a PC-client TPM.
func checkPCR(pcr int) error {
	if pcr < 0 || pcr >= NumPCRs {
		return fmt.Errorf("PCR index %d is out of range 0-%d", pcr, NumPCRs-1)
	}
	return nil
}

// pcrSelect returns the selection bitmap of one PCR.
func pcrSelect(pcr int) []byte {
	sel := make([]byte, NumPCRs/8)
	sel[pcr/8] = 1 << (pcr % 8)
	return sel
}

func readPCR(t transport.TPM, pcr int) ([]byte, error) {
	if err := checkPCR(pcr); err != nil {
		return nil, fmt.Errorf("read SHA-256 PCR: %w", err)
	}
	sel := pcrSelect(pcr)
	rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: sel},
	}}}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("read SHA-256 PCR %d: %w", pcr, err)
	}
	got := rsp.PCRSelectionOut.PCRSelections
	if len(got) != 1 || got[0].Hash != tpm2.TPMAlgSHA256 || !bytes.Equal(got[0].PCRSelect, sel) || len(rsp.PCRValues.Digests) != 1 {
		return nil, fmt.Errorf("read SHA-256 PCR %d: TPM returned another selection (is the SHA-256 bank allocated?)", pcr)
	}
	v := rsp.PCRValues.Digests[0].Buffer
	if len(v) != sha256.Size {
		return nil, fmt.Errorf("read SHA-256 PCR %d: %d bytes", pcr, len(v))
	}
	return v, nil
}

func extendPCR(t transport.TPM, pcr int, digest []byte) error {
	if err := checkPCR(pcr); err != nil {
		return fmt.Errorf("extend SHA-256 PCR: %w", err)
	}
	if len(digest) != sha256.Size {
		return fmt.Errorf("extend SHA-256 PCR %d: digest is %d bytes, want %d", pcr, len(digest), sha256.Size)
	}
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(pcr), Auth: tpm2.PasswordAuth(nil)},
		Digests: tpm2.TPMLDigestValues{Digests: []tpm2.TPMTHA{
			{HashAlg: tpm2.TPMAlgSHA256, Digest: digest},
		}},
	}.Execute(t)
	if err != nil {
		return fmt.Errorf("extend SHA-256 PCR %d: %w", pcr, err)
	}
	return nil
}
