package service

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/kbc/kbs"
)

// Token types GetToken knows.
const (
	TokenKBS    = "kbs"
	TokenCoCoAS = "coco_as"
)

// reportDataLimit returns the report data, in bytes, the primary attester
// of tee takes (it zero-pads shorter data and refuses longer data). Other
// TEEs decide themselves: the TPM truncates to its 32-byte qualifying data,
// as upstream.
func reportDataLimit(tee string) (int, bool) {
	switch tee {
	case "sample", "tdx", "snp":
		return 64, true
	}
	return 0, false
}

// AAConfig configures NewAA.
type AAConfig struct {
	// Attester is the primary attester. Required.
	Attester attester.Attester
	// KBS is the KBS client, shared with the data hub's KBC so that one
	// attestation serves every token and resource while its token is
	// valid. nil: no KBS is configured and GetToken("kbs") fails with
	// FailedPrecondition.
	KBS *kbs.Client
	// Eventlog is the AAEL ExtendRuntimeMeasurement records into. nil: no
	// event log, and ExtendRuntimeMeasurement answers NOT_ENABLED, or
	// NOT_SUPPORTED when EventlogEnabled says the configuration asked for
	// one (enable_eventlog) but the TEE has no register to extend.
	Eventlog        *eventlog.Log
	EventlogEnabled bool
	// ExposeTEEKey makes GetToken("kbs") answer upstream's legacy
	// {"token","tee_keypair"} with the PEM of the TEE private key, for
	// clients that open KBS responses themselves (upstream's
	// AATokenProvider). RISK: the key is the one the shared KBS session
	// is bound to, so any holder of the AA socket who gets it can, with the
	// token, fetch and open every resource the KBS policy releases to this
	// TEE until the token expires, and open any response sealed to the
	// session. Leave it off unless such a client must be served; the REST
	// API never returns the key.
	ExposeTEEKey bool
	// InitData is the init-data document guestd was launched with (kata's
	// initdata.toml), nil if none. When set, BindInitData refuses any other
	// digest, and BindLaunchInitData binds its digest.
	InitData *config.Initdata
	// Logger receives one line per call; never secrets. Default: discard.
	Logger *slog.Logger
}

// AA implements attestation_agent.AttestationAgentService for gRPC and
// ttRPC. It is safe for concurrent use.
type AA struct {
	aapb.UnimplementedAttestationAgentServiceServer

	cfg AAConfig
	log *slog.Logger

	bindMu sync.Mutex
	bound  []byte // the init-data digest this process extended into PCR 8
}

var (
	_ aapb.AttestationAgentServiceServer       = (*AA)(nil)
	_ aapb.TTRPCAttestationAgentServiceService = (*AA)(nil)
)

// NewAA returns the attestation agent service for cfg.
func NewAA(cfg AAConfig) (*AA, error) {
	if cfg.Attester == nil {
		return nil, errors.New("attestation agent service: no attester")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &AA{cfg: cfg, log: log.With("service", "attestation-agent")}, nil
}

// GetEvidence returns the primary attester's evidence JSON with the runtime
// data, unhashed, as its report data.
func (a *AA) GetEvidence(ctx context.Context, req *aapb.GetEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	c := begin(ctx, a.log, "GetEvidence", "", "runtime_data_bytes", len(req.GetRuntimeData()))
	ev, err := a.evidence(c, req.GetRuntimeData())
	if err != nil {
		return nil, err
	}
	return &aapb.GetEvidenceResponse{Evidence: ev}, nil
}

func (a *AA) evidence(c *call, runtimeData []byte) ([]byte, error) {
	tee := a.cfg.Attester.Tee()
	if limit, ok := reportDataLimit(tee); ok && len(runtimeData) > limit {
		return nil, c.failf(codes.InvalidArgument, "runtime data is %d bytes; the %s attester takes at most %d as report data", len(runtimeData), tee, limit)
	}
	ev, err := a.cfg.Attester.Evidence(c.ctx, runtimeData)
	if err != nil {
		return nil, c.fail(err)
	}
	c.ok("tee", tee, "evidence_bytes", len(ev))
	return ev, nil
}

// GetAdditionalEvidence answers empty evidence: guestd has no additional
// (device) attesters, and upstream answers empty bytes when it has none.
func (a *AA) GetAdditionalEvidence(ctx context.Context, req *aapb.GetAdditionalEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	begin(ctx, a.log, "GetAdditionalEvidence", "").ok("additional_tees", 0)
	return &aapb.GetEvidenceResponse{Evidence: []byte{}}, nil
}

// GetToken answers GetToken("kbs") with {"token":"<JWT>"}, the shared KBS
// client's token (cached while valid: no attestation when one is), plus
// "tee_keypair" only with ExposeTEEKey. "coco_as" tokens are not supported
// (Unimplemented); other types are InvalidArgument.
func (a *AA) GetToken(ctx context.Context, req *aapb.GetTokenRequest) (*aapb.GetTokenResponse, error) {
	c := begin(ctx, a.log, "GetToken", req.GetTokenType())
	tok, err := a.token(c, req.GetTokenType(), a.cfg.ExposeTEEKey)
	if err != nil {
		return nil, err
	}
	return &aapb.GetTokenResponse{Token: tok}, nil
}

func (a *AA) token(c *call, tokenType string, withKey bool) ([]byte, error) {
	switch tokenType {
	case TokenKBS:
	case TokenCoCoAS:
		return nil, c.failf(codes.Unimplemented, "token type %q (a CoCo attestation-service token) is not supported by guestd; only %q", tokenType, TokenKBS)
	case "":
		return nil, c.failf(codes.InvalidArgument, "no token type (want %q)", TokenKBS)
	default:
		return nil, c.failf(codes.InvalidArgument, "unknown token type %q (want %q)", tokenType, TokenKBS)
	}
	if a.cfg.KBS == nil {
		return nil, c.failf(codes.FailedPrecondition, "no KBS is configured (AA config [token_configs.kbs], or agent.aa_kbc_params=cc_kbc::<url>)")
	}
	if !withKey {
		tok, err := a.cfg.KBS.Attest(c.ctx)
		if err != nil {
			return nil, c.fail(err)
		}
		out, err := json.Marshal(struct {
			Token string `json:"token"`
		}{tok.Raw})
		if err != nil {
			return nil, c.fail(err)
		}
		c.ok("expiry", tok.Expiry)
		return out, nil
	}
	tok, pem, err := a.cfg.KBS.TokenWithKeyPEM(c.ctx)
	if err != nil {
		return nil, c.fail(err)
	}
	defer clear(pem)
	out, err := json.Marshal(struct {
		Token      string `json:"token"`
		TeeKeypair string `json:"tee_keypair"`
	}{tok.Raw, string(pem)})
	if err != nil {
		return nil, c.fail(err)
	}
	c.log.Warn("handing out the TEE private key with the token (ExposeTEEKey): its holder can open every resource of this KBS session")
	c.ok("expiry", tok.Expiry)
	return out, nil
}

// ExtendRuntimeMeasurement records "<domain> <operation> <content>" in the
// AAEL and extends it into the register RegisterIndex (default: the log's
// initial PCR) maps to.
func (a *AA) ExtendRuntimeMeasurement(ctx context.Context, req *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	c := begin(ctx, a.log, "ExtendRuntimeMeasurement", req.GetDomain()+" "+req.GetOperation(),
		"domain", req.GetDomain(), "operation", req.GetOperation())
	var register *uint64
	if req != nil {
		register = req.RegisterIndex
	}
	res, err := a.measure(c, req.GetDomain(), req.GetOperation(), req.GetContent(), register)
	if err != nil {
		return nil, err
	}
	return &aapb.ExtendRuntimeMeasurementResponse{Result: res}, nil
}

func (a *AA) measure(c *call, domain, operation, content string, register *uint64) (aapb.RuntimeMeasurementResult, error) {
	// The event is checked first, so that a bad request is refused
	// whatever the configuration (upstream answers NOT_ENABLED to anything
	// when the log is off).
	for _, f := range []struct{ name, v string }{{"domain", domain}, {"operation", operation}} {
		if f.v == "" {
			return 0, c.failf(codes.InvalidArgument, "empty %s", f.name)
		}
		if strings.ContainsAny(f.v, " \t\n\v\f\r") {
			return 0, c.failf(codes.InvalidArgument, "%s %q contains white space", f.name, f.v)
		}
	}
	if strings.Contains(content, "\n") {
		return 0, c.failf(codes.InvalidArgument, "content contains a newline")
	}
	if a.cfg.Eventlog == nil {
		res := aapb.RuntimeMeasurementResult_NOT_ENABLED
		if a.cfg.EventlogEnabled {
			res = aapb.RuntimeMeasurementResult_NOT_SUPPORTED
		}
		c.ok("result", res.String())
		return res, nil
	}
	if err := a.cfg.Eventlog.Extend(c.ctx, domain, operation, content, register); err != nil {
		return 0, c.fail(err)
	}
	c.ok("result", aapb.RuntimeMeasurementResult_OK.String(), "register", registerAttr(register))
	return aapb.RuntimeMeasurementResult_OK, nil
}

func registerAttr(r *uint64) any {
	if r == nil {
		return "default"
	}
	return *r
}

// GetTeeType names the primary TEE as the KBS protocol spells it.
func (a *AA) GetTeeType(ctx context.Context, _ *aapb.GetTeeTypeRequest) (*aapb.GetTeeTypeResponse, error) {
	tee := a.cfg.Attester.Tee()
	begin(ctx, a.log, "GetTeeType", "").ok("tee", tee)
	return &aapb.GetTeeTypeResponse{Tee: tee}, nil
}

// GetAdditionalTees answers an empty list: guestd has no additional
// attesters.
func (a *AA) GetAdditionalTees(ctx context.Context, _ *aapb.GetAdditionalTeesRequest) (*aapb.GetAdditionalTeesResponse, error) {
	begin(ctx, a.log, "GetAdditionalTees", "").ok()
	return &aapb.GetAdditionalTeesResponse{AdditionalTees: []string{}}, nil
}
