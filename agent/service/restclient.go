package service

import (
	"context"
	"encoding/json"
	"time"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/rest"
)

// RESTAttestationClient lets agent/rest serve the attestation routes from
// an attestation agent reached over ttRPC (api-server-rest as its own
// process, kata's launch plan). The token it returns never carries a TEE
// key, whatever the agent answers.
func RESTAttestationClient(c aapb.TTRPCAttestationAgentServiceService) rest.Attestation {
	return restAAClient{c}
}

// RESTResourcesClient lets agent/rest serve the resource route from a data
// hub reached over ttRPC.
func RESTResourcesClient(c cdhpb.TTRPCGetResourceServiceService) rest.Resources {
	return restCDHClient{c}
}

// infoTimeout bounds the calls behind /info, whose interface has no context.
const infoTimeout = 10 * time.Second

type restAAClient struct {
	c aapb.TTRPCAttestationAgentServiceService
}

func (r restAAClient) Evidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	resp, err := r.c.GetEvidence(ctx, &aapb.GetEvidenceRequest{RuntimeData: runtimeData})
	return resp.GetEvidence(), err
}

func (r restAAClient) AdditionalEvidence(ctx context.Context, runtimeData []byte) ([]byte, error) {
	resp, err := r.c.GetAdditionalEvidence(ctx, &aapb.GetAdditionalEvidenceRequest{RuntimeData: runtimeData})
	return resp.GetEvidence(), err
}

func (r restAAClient) Token(ctx context.Context, tokenType string) ([]byte, error) {
	resp, err := r.c.GetToken(ctx, &aapb.GetTokenRequest{TokenType: tokenType})
	if err != nil {
		return nil, err
	}
	// Keep only the token, should the agent be one that adds the key.
	var t struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(resp.GetToken(), &t) != nil || t.Token == "" {
		return resp.GetToken(), nil // not JSON: agent/rest refuses what is not a bare token
	}
	return json.Marshal(t)
}

func (r restAAClient) ExtendRuntimeMeasurement(ctx context.Context, domain, operation, content string, register *uint64) error {
	resp, err := r.c.ExtendRuntimeMeasurement(ctx, &aapb.ExtendRuntimeMeasurementRequest{
		Domain: domain, Operation: operation, Content: content, RegisterIndex: register})
	switch {
	case err != nil:
		return err
	case resp.GetResult() == aapb.RuntimeMeasurementResult_NOT_ENABLED:
		return rest.ErrMeasurementNotEnabled
	case resp.GetResult() == aapb.RuntimeMeasurementResult_NOT_SUPPORTED:
		return rest.ErrMeasurementNotSupported
	}
	return nil
}

func (r restAAClient) TeeType() string {
	ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
	defer cancel()
	resp, err := r.c.GetTeeType(ctx, &aapb.GetTeeTypeRequest{})
	if err != nil {
		return ""
	}
	return resp.GetTee()
}

func (r restAAClient) AdditionalTees() []string {
	ctx, cancel := context.WithTimeout(context.Background(), infoTimeout)
	defer cancel()
	resp, err := r.c.GetAdditionalTees(ctx, &aapb.GetAdditionalTeesRequest{})
	if err != nil || resp.GetAdditionalTees() == nil {
		return []string{}
	}
	return resp.GetAdditionalTees()
}

type restCDHClient struct {
	c cdhpb.TTRPCGetResourceServiceService
}

func (r restCDHClient) GetResource(ctx context.Context, uri string) ([]byte, error) {
	resp, err := r.c.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: uri})
	return resp.GetResource(), err
}
