package tpm

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/guestd/guestd/attester"
)

// ReportDataSize is the size of the quote's qualifying data: report data is
// truncated or zero-padded to it, as upstream.
const ReportDataSize = 32

// quoteAttempts bounds retries when a PCR changes between the quote and the
// PCR read, so the values read do not match the quoted digest.
const quoteAttempts = 3

// Options configures Open.
type Options struct {
	// Device is a TPM character device path or "unix:PATH" for a TPM
	// emulator socket. Empty means DefaultDevice().
	Device string
	// AKHandle is the persistent handle of the AK. Zero means
	// DefaultAKHandle.
	AKHandle uint32
}

// DefaultDevice returns /dev/tpmrm0 if it exists, else /dev/tpm0.
func DefaultDevice() string { return defaultDevice() }

// ParseAKHandle parses an AK handle as upstream's AA_TPM_AK_HANDLE spells
// it: hexadecimal, with or without a 0x prefix.
func ParseAKHandle(s string) (uint32, error) {
	h := strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	v, err := strconv.ParseUint(h, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse AK handle %q: %w", s, err)
	}
	return uint32(v), nil
}

// Attester quotes with a TPM's AK. It is safe for concurrent use; callers
// take turns on the TPM.
type Attester struct {
	device string
	handle uint32

	// akDER is the AK's DER SubjectPublicKeyInfo and akPub the key, both
	// fixed at Open; a reconnect must find the same AK.
	akDER []byte
	akPub *rsa.PublicKey

	// sem holds one token while a caller uses the fields below; unlike a
	// mutex, waiting for it honours the caller's context.
	sem    chan struct{}
	conn   conn // nil after an interrupted or failed exchange
	ak     ak
	closed bool
}

// Open connects to the TPM and loads or creates the AK.
func Open(ctx context.Context, opts Options) (*Attester, error) {
	a := &Attester{device: opts.Device, handle: opts.AKHandle, sem: make(chan struct{}, 1)}
	if a.device == "" {
		a.device = DefaultDevice()
	}
	if a.handle == 0 {
		a.handle = DefaultAKHandle
	}
	if err := a.connect(ctx); err != nil {
		return nil, fmt.Errorf("open TPM attester on %s: %w", a.device, err)
	}
	return a, nil
}

// connect opens the TPM and loads the AK, unless already connected.
func (a *Attester) connect(ctx context.Context) error {
	if a.conn != nil {
		return nil
	}
	c, err := dial(ctx, a.device)
	if err != nil {
		return err
	}
	stop := c.interruptOn(ctx)
	if a.ak.transient {
		// A transient AK left by a dropped connection: without a
		// resource manager it still occupies a slot.
		flush(c, a.ak.handle)
		a.ak = ak{}
	}
	k, err := loadAK(c, a.handle)
	if stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err != nil {
		if k.transient {
			flush(c, k.handle)
		}
		c.Close()
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		err = fmt.Errorf("encode AK public key: %w", err)
	} else if a.akDER != nil && !bytes.Equal(der, a.akDER) {
		err = fmt.Errorf("AK at %#x changed since the attester opened", a.handle)
	}
	if err != nil {
		if k.transient {
			flush(c, k.handle)
		}
		c.Close()
		return err
	}
	a.conn, a.ak = c, k
	if a.akDER == nil {
		// Set once, at Open; the accessors read them without the token.
		a.akDER, a.akPub = der, k.pub
	}
	return nil
}

// drop closes a connection whose state is unknown, without sending on it;
// the next call redials (and flushes a transient AK on the new channel).
func (a *Attester) drop() {
	if a.conn == nil {
		return
	}
	a.conn.Close()
	a.conn = nil
}

// Close flushes a transient AK and closes the TPM. A persisted AK stays.
func (a *Attester) Close() error {
	a.sem <- struct{}{}
	defer func() { <-a.sem }()
	if a.closed {
		return nil
	}
	a.closed = true
	if a.conn == nil {
		return nil
	}
	if a.ak.transient {
		flush(a.conn, a.ak.handle)
	}
	err := a.conn.Close()
	a.conn = nil
	if err != nil {
		return fmt.Errorf("close TPM %s: %w", a.device, err)
	}
	return nil
}

// Tee returns "tpm".
func (*Attester) Tee() string { return "tpm" }

// AKPublic returns the AK's public key.
func (a *Attester) AKPublic() *rsa.PublicKey { return a.akPub }

// AKPublicDER returns the AK's DER SubjectPublicKeyInfo. Its standard base64
// is the evidence's ak_public, and the value trustee's policy compares with
// its trusted-AK reference values.
func (a *Attester) AKPublicDER() []byte { return bytes.Clone(a.akDER) }

// AKPublicPEM returns the AK public key as a PEM "PUBLIC KEY" block, the
// form trustee documents for trusted AK files.
func (a *Attester) AKPublicPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: a.akDER})
}

// Evidence quotes PCRs 0-23 (SHA-256) with reportData, truncated or padded
// to 32 bytes, as qualifying data and returns the JSON of Evidence.
// Cancelling ctx aborts waiting for the TPM, and on a socket TPM also a
// command in flight.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("TPM evidence: %w", err)
	}
	nonce, err := attester.Regularize(reportData, ReportDataSize, true)
	if err != nil {
		return nil, fmt.Errorf("TPM evidence: %w", err)
	}
	select {
	case a.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("TPM evidence: wait for TPM: %w", ctx.Err())
	}
	defer func() { <-a.sem }()
	if a.closed {
		return nil, errors.New("TPM evidence: attester is closed")
	}
	if err := a.connect(ctx); err != nil {
		return nil, fmt.Errorf("TPM evidence: reconnect to %s: %w", a.device, err)
	}
	stop := a.conn.interruptOn(ctx)
	ev, err := a.quote(ctx, a.conn, nonce)
	if stop() {
		// The channel may hold half a command or an unread response.
		a.drop()
		return nil, fmt.Errorf("TPM evidence: %w", errors.Join(ctx.Err(), err))
	}
	if err != nil {
		var rc tpm2.TPMRC
		if !errors.As(err, &rc) && ctx.Err() == nil {
			// Not an answer from the TPM: the channel is suspect.
			a.drop()
		}
		return nil, fmt.Errorf("TPM evidence: %w", err)
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("TPM evidence: encode JSON: %w", err)
	}
	return out, nil
}

// pcrSelection selects PCRs 0-23 of the SHA-256 bank.
func pcrSelection() tpm2.TPMLPCRSelection {
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
		{Hash: tpm2.TPMAlgSHA256, PCRSelect: []byte{0xff, 0xff, 0xff}},
	}}
}

// quote runs TPM2_Quote and reads the quoted PCRs, retrying if they changed
// in between.
func (a *Attester) quote(ctx context.Context, t transport.TPM, nonce []byte) (*Evidence, error) {
	for range quoteAttempts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: a.ak.handle, Name: a.ak.name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: nonce},
			InScheme: tpm2.TPMTSigScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUSigScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSchemeHash{HashAlg: tpm2.TPMAlgSHA256}),
			},
			PCRSelect: pcrSelection(),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("quote with AK %#x: %w", uint32(a.ak.handle), err)
		}
		if rsp.Signature.SigAlg != tpm2.TPMAlgRSASSA {
			return nil, fmt.Errorf("quote with AK %#x: TPM signed with scheme %#04x, not RSASSA", uint32(a.ak.handle), uint16(rsp.Signature.SigAlg))
		}
		att, err := rsp.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("decode quote: %w", err)
		}
		info, err := att.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("decode quote: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		pcrs, err := readPCRs(t)
		if err != nil {
			return nil, err
		}
		h := sha256.New()
		for _, v := range pcrs {
			h.Write(v)
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			continue // a PCR was extended after the quote; quote again
		}
		ev := &Evidence{
			Quote: Quote{
				Signature: base64.StdEncoding.EncodeToString(tpm2.Marshal(rsp.Signature)),
				Message:   base64.StdEncoding.EncodeToString(rsp.Quoted.Bytes()),
			},
			AKPublic: base64.StdEncoding.EncodeToString(a.akDER),
		}
		for _, v := range pcrs {
			ev.Quote.PCRs = append(ev.Quote.PCRs, hex.EncodeToString(v))
		}
		return ev, nil
	}
	return nil, fmt.Errorf("quote with AK %#x: PCRs changed during each of %d attempts", uint32(a.ak.handle), quoteAttempts)
}

// readPCRs reads SHA-256 PCRs 0-23. TPM2_PCR_Read returns at most eight
// digests per call, so it reads one selection byte at a time.
func readPCRs(t transport.TPM) ([][]byte, error) {
	var out [][]byte
	for i := range NumPCRs / 8 {
		sel := []byte{0, 0, 0}
		sel[i] = 0xff
		rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{
			{Hash: tpm2.TPMAlgSHA256, PCRSelect: sel},
		}}}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("read SHA-256 PCRs %d-%d: %w", i*8, i*8+7, err)
		}
		got := rsp.PCRSelectionOut.PCRSelections
		if len(got) != 1 || got[0].Hash != tpm2.TPMAlgSHA256 || !bytes.Equal(got[0].PCRSelect, sel) || len(rsp.PCRValues.Digests) != 8 {
			return nil, fmt.Errorf("read SHA-256 PCRs %d-%d: TPM returned another selection (is the SHA-256 bank allocated?)", i*8, i*8+7)
		}
		for j, d := range rsp.PCRValues.Digests {
			if len(d.Buffer) != sha256.Size {
				return nil, fmt.Errorf("read SHA-256 PCR %d: %d bytes", i*8+j, len(d.Buffer))
			}
			out = append(out, d.Buffer)
		}
	}
	return out, nil
}
