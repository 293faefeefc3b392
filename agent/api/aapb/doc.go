// Package aapb is the generated Go code for the attestation-agent API
// (proto/attestation-agent.proto: package attestation_agent, service
// AttestationAgentService), with gRPC and ttRPC stubs.
//
// Servers implement AttestationAgentServiceServer (gRPC; embed
// UnimplementedAttestationAgentServiceServer) and register it with
// RegisterAttestationAgentServiceServer, or implement
// TTRPCAttestationAgentServiceService and register it with
// RegisterTTRPCAttestationAgentServiceService. Clients come from
// NewAttestationAgentServiceClient and NewTTRPCAttestationAgentServiceClient.
//
// Do not edit the *.pb.go files; run `make proto`.
package aapb
