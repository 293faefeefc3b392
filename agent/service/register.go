package service

import (
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/api/keyproviderpb"
)

// RegisterTTRPC registers the services on a ttRPC server. A nil argument
// skips its services, so one call sets up each of upstream's sockets:
//
//	RegisterTTRPC(aaServer, aa, nil, nil)   // attestation-agent.sock
//	RegisterTTRPC(cdhServer, nil, cdh, kp)  // cdh.sock: CDH + keyprovider
func RegisterTTRPC(s *ttrpc.Server, aa *AA, cdh *CDH, kp *KeyProvider) {
	if aa != nil {
		aapb.RegisterTTRPCAttestationAgentServiceService(s, aa)
	}
	if cdh != nil {
		cdhpb.RegisterTTRPCSealedSecretServiceService(s, cdh)
		cdhpb.RegisterTTRPCGetResourceServiceService(s, cdh)
		cdhpb.RegisterTTRPCSecureMountServiceService(s, cdh)
		cdhpb.RegisterTTRPCImagePullServiceService(s, cdh)
	}
	if kp != nil {
		keyproviderpb.RegisterTTRPCKeyProviderServiceService(s, kp)
	}
}

// RegisterGRPC registers the services on a gRPC server (upstream's grpc-aa
// and grpc-cdh builds); nil arguments skip theirs, as RegisterTTRPC.
func RegisterGRPC(s grpc.ServiceRegistrar, aa *AA, cdh *CDH, kp *KeyProvider) {
	if aa != nil {
		aapb.RegisterAttestationAgentServiceServer(s, aa)
	}
	if cdh != nil {
		cdhpb.RegisterSealedSecretServiceServer(s, cdh)
		cdhpb.RegisterGetResourceServiceServer(s, cdh)
		cdhpb.RegisterSecureMountServiceServer(s, cdh)
		cdhpb.RegisterImagePullServiceServer(s, cdh)
	}
	if kp != nil {
		keyproviderpb.RegisterKeyProviderServiceServer(s, kp)
	}
}
