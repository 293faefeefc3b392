// Package api holds guestd's definitions of the Confidential Containers guest
// APIs and the Go code generated from them. It has no code of its own; its
// tests check that the generated code is fresh and wire compatible.
//
// The .proto files in proto/ are guestd's own, written to match upstream's
// package, service, method and message names and field numbers, so clients
// built from confidential-containers/guest-components (and kata-agent) talk to
// guestd unchanged:
//
//   - aapb: package attestation_agent, AttestationAgentService.
//   - cdhpb: package api, SealedSecretService, GetResourceService,
//     SecureMountService and ImagePullService.
//   - keyproviderpb: package keyprovider, KeyProviderService (ttRPC stubs;
//     messages and gRPC stubs are ocicrypt's, see its package doc).
//
// Every service has both gRPC stubs (Register<S>Server, New<S>Client) and
// ttRPC stubs (RegisterTTRPC<S>Service, NewTTRPC<S>Client); the TTRPC prefix
// keeps the two apart in one Go package.
//
// Regenerate with `make proto` (test/scripts/proto-tools.sh gen), which
// installs protoc and the pinned plugins if missing; TestGeneratedCodeIsFresh
// fails when the committed code differs from what the generator produces.
package api

//go:generate ../../test/scripts/proto-tools.sh gen
