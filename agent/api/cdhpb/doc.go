// Package cdhpb is the generated Go code for the confidential-data-hub API
// (proto/confidential_data_hub.proto: package api), with gRPC and ttRPC stubs
// for SealedSecretService, GetResourceService, SecureMountService and
// ImagePullService. Upstream serves all four on one socket; a ttrpc.Server or
// grpc.Server can hold them all.
//
// For each service S: gRPC Register<S>Server and New<S>Client (embed
// Unimplemented<S>Server), ttRPC RegisterTTRPC<S>Service and
// NewTTRPC<S>Client.
//
// Do not edit the *.pb.go files; run `make proto`.
package cdhpb
