package service

import (
	"context"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/rest"
)

// RESTAttestation lets agent/rest serve the attestation routes from a. Its
// Token never carries the TEE key, whatever AAConfig.ExposeTEEKey says.
func RESTAttestation(a *AA) rest.Attestation { return restAA{a} }

// RESTResources lets agent/rest serve the resource route from h.
func RESTResources(h *CDH) rest.Resources { return restCDH{h} }

type restAA struct{ a *AA }

func (r restAA) Evidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	return r.a.evidence(begin(ctx, r.a.log, "GetEvidence", "", "api", "rest", "runtime_data_bytes", len(runtimeData)), runtimeData)
}

func (r restAA) AdditionalEvidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	resp, err := r.a.GetAdditionalEvidence(ctx, &aapb.GetAdditionalEvidenceRequest{RuntimeData: runtimeData})
	if err != nil {
		return nil, err
	}
	return resp.GetEvidence(), nil
}

func (r restAA) Token(ctx context.Context, tokenType string) ([]byte, error) {
	return r.a.token(begin(ctx, r.a.log, "GetToken", tokenType, "api", "rest"), tokenType, false)
}

func (r restAA) ExtendRuntimeMeasurement(ctx context.Context, domain, operation, content string, register *uint64) error {
	c := begin(ctx, r.a.log, "ExtendRuntimeMeasurement", domain+" "+operation, "api", "rest", "domain", domain, "operation", operation)
	res, err := r.a.measure(c, domain, operation, content, register)
	switch {
	case err != nil:
		return err
	case res == aapb.RuntimeMeasurementResult_NOT_ENABLED:
		return rest.ErrMeasurementNotEnabled
	case res == aapb.RuntimeMeasurementResult_NOT_SUPPORTED:
		return rest.ErrMeasurementNotSupported
	}
	return nil
}

func (r restAA) TeeType() string { return r.a.cfg.Attester.Tee() }

func (r restAA) AdditionalTees() []string { return []string{} }

type restCDH struct{ h *CDH }

func (r restCDH) GetResource(ctx context.Context, uri string) ([]byte, error) {
	return r.h.resource(begin(ctx, r.h.log, "GetResource", uri, "api", "rest"), uri)
}
