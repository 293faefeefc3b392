package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/attester/tdx"
)

// InitDataPCR is the TPM PCR init-data is bound into (upstream's TPM and
// Azure vTPM attesters; trustee's TPM verifier reads it as init_data).
const InitDataPCR = 8

// maxDigest bounds a BindInitData digest: SHA-512, the largest init-data
// algorithm.
const maxDigest = 64

// BindInitData binds an init-data digest to the TEE, with the semantics of
// upstream's gRPC attestation agent (its ttRPC agent does not implement the
// method; guestd serves it on both):
//
//   - tdx: the digest, zero-padded or truncated to 48 bytes, must equal
//     MRCONFIGID (read here from a fresh TD quote);
//   - snp: the digest, zero-padded or truncated to 32 bytes, must equal
//     HOSTDATA (from a fresh attestation report);
//   - tpm: the digest, which must be 32 bytes (SHA-256), is extended into
//     PCR 8 (InitDataPCR);
//   - any other TEE (sample) cannot bind: the call succeeds and nothing is
//     checked, as upstream answers success for an unsupported binding.
//
// A mismatch fails with FailedPrecondition. Beyond upstream: when AAConfig
// has the launch InitData, a digest other than its digest is refused
// (FailedPrecondition); and a TPM binding is done at most once: binding the
// digest already bound (by this AA, or found in PCR 8 as
// SHA-256(0…0 ‖ digest), e.g. by an earlier run of guestd) succeeds
// without extending again, and binding another digest after that fails,
// since a second extend would leave PCR 8 matching neither. (A PCR 8 that
// holds anything else is extended, as upstream does.)
func (a *AA) BindInitData(ctx context.Context, req *aapb.BindInitDataRequest) (*aapb.BindInitDataResponse, error) {
	c := begin(ctx, a.log, "BindInitData", "", "digest_bytes", len(req.GetDigest()))
	if _, err := a.bind(c, req.GetDigest()); err != nil {
		return nil, err
	}
	return &aapb.BindInitDataResponse{}, nil
}

// BindLaunchInitData binds the digest of AAConfig.InitData as
// BindInitData does; upstream's attestation agent does this at start-up
// and refuses to start when it fails. It reports whether the TEE bound
// anything (false: the TEE has no init-data binding, or there is no
// InitData).
func (a *AA) BindLaunchInitData(ctx context.Context) (bool, error) {
	if a.cfg.InitData == nil {
		return false, nil
	}
	c := begin(ctx, a.log, "BindLaunchInitData", "", "algorithm", a.cfg.InitData.Algorithm)
	return a.bind(c, a.cfg.InitData.Digest)
}

func (a *AA) bind(c *call, digest []byte) (bool, error) {
	if len(digest) == 0 {
		return false, c.failf(codes.InvalidArgument, "empty init-data digest")
	}
	if len(digest) > maxDigest {
		return false, c.failf(codes.InvalidArgument, "init-data digest is %d bytes; no init-data algorithm makes more than %d", len(digest), maxDigest)
	}
	if id := a.cfg.InitData; id != nil && !bytes.Equal(digest, id.Digest) {
		return false, c.failf(codes.FailedPrecondition, "digest %x is not the %s digest of the init-data guestd was launched with (%x)", digest, id.Algorithm, id.Digest)
	}
	tee := a.cfg.Attester.Tee()
	var err error
	switch tee {
	case "tdx":
		err = a.compare(c, digest, "MRCONFIGID", 48, tdxConfigID)
	case "snp":
		err = a.compare(c, digest, "HOSTDATA", 32, snpHostData)
	case "tpm":
		err = a.extendInitData(c, digest)
	default:
		c.log.Warn("this TEE has no init-data binding: nothing was checked", "tee", tee)
		c.ok("tee", tee, "bound", false)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	c.ok("tee", tee, "bound", true)
	return true, nil
}

// compare checks the digest, padded or truncated to size bytes, against the
// launch measurement field read from fresh evidence.
func (a *AA) compare(c *call, digest []byte, field string, size int, read func(json.RawMessage) ([]byte, error)) error {
	ev, err := a.cfg.Attester.Evidence(c.ctx, nil)
	if err != nil {
		return c.fail(fmt.Errorf("read %s: %w", field, err))
	}
	got, err := read(ev)
	if err != nil {
		return c.failf(codes.Internal, "read %s: %v", field, err)
	}
	want := make([]byte, size)
	copy(want, digest)
	if !bytes.Equal(got, want) {
		return c.failf(codes.FailedPrecondition, "init-data digest does not match %s: digest %x (as %d bytes: %x), %s %x",
			field, digest, size, want, field, got)
	}
	return nil
}

// tdxConfigID returns MRCONFIGID from TDX evidence: at offset 0xB8 of the
// TD report body, which follows the 48-byte quote header (version 4) or
// the header and a 6-byte body descriptor (version 5).
func tdxConfigID(ev json.RawMessage) ([]byte, error) {
	quote, _, err := tdx.ParseEvidence(ev)
	if err != nil {
		return nil, err
	}
	const header, offset, size = 0x30, 0xB8, 48
	if len(quote) < 2 {
		return nil, fmt.Errorf("TD quote is %d bytes", len(quote))
	}
	body := header
	switch v := binary.LittleEndian.Uint16(quote); v {
	case 4:
	case 5:
		body += 6
	default:
		return nil, fmt.Errorf("TD quote version %d is not supported (4 or 5)", v)
	}
	if len(quote) < body+offset+size {
		return nil, fmt.Errorf("TD quote is %d bytes, too short for MRCONFIGID", len(quote))
	}
	return bytes.Clone(quote[body+offset : body+offset+size]), nil
}

// snpHostData returns HOSTDATA from SNP evidence.
func snpHostData(ev json.RawMessage) ([]byte, error) {
	var e snp.Evidence
	if err := json.Unmarshal(ev, &e); err != nil {
		return nil, fmt.Errorf("parse snp evidence: %w", err)
	}
	return bytes.Clone(e.AttestationReport.HostData[:]), nil
}

// extendInitData extends a SHA-256 init-data digest into PCR 8, at most
// once (see BindInitData).
func (a *AA) extendInitData(c *call, digest []byte) error {
	pcrs, ok := a.cfg.Attester.(eventlog.PCRs)
	if !ok {
		return c.failf(codes.Internal, "the tpm attester (%T) cannot extend PCRs", a.cfg.Attester)
	}
	if len(digest) != sha256.Size {
		return c.failf(codes.InvalidArgument, "a TPM binds init-data into a SHA-256 PCR: the digest must be %d bytes (algorithm sha256), not %d", sha256.Size, len(digest))
	}
	a.bindMu.Lock()
	defer a.bindMu.Unlock()
	if a.bound != nil {
		if bytes.Equal(a.bound, digest) {
			c.log.Info("init-data already bound into PCR 8")
			return nil
		}
		return c.failf(codes.FailedPrecondition, "PCR %d already binds init-data %x; binding %x too would match neither", InitDataPCR, a.bound, digest)
	}
	cur, err := pcrs.ReadPCR(c.ctx, InitDataPCR)
	if err != nil {
		return c.fail(fmt.Errorf("read PCR %d: %w", InitDataPCR, err))
	}
	once := sha256.Sum256(append(make([]byte, sha256.Size), digest...))
	if bytes.Equal(cur, once[:]) {
		a.bound = bytes.Clone(digest)
		c.log.Info("init-data already bound into PCR 8 (found in the PCR)")
		return nil
	}
	if err := pcrs.ExtendPCR(c.ctx, InitDataPCR, digest); err != nil {
		return c.fail(fmt.Errorf("extend PCR %d: %w", InitDataPCR, err))
	}
	a.bound = bytes.Clone(digest)
	return nil
}
