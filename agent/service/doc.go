// Package service implements the Confidential Containers guest APIs behind
// guestd's sockets, once for both transports: every service type satisfies
// the generated gRPC server interface and the ttRPC service interface of
// package agent/api, and RegisterTTRPC / RegisterGRPC put them on a
// server (a nil service is skipped, so the attestation agent's socket gets
// AA alone and cdh.sock gets CDH and KeyProvider, as upstream).
//
//   - AA is attestation_agent.AttestationAgentService (upstream's
//     attestation-agent).
//   - CDH is api.SealedSecretService, api.GetResourceService,
//     api.SecureMountService and api.ImagePullService (upstream's
//     confidential-data-hub).
//   - KeyProvider is keyprovider.KeyProviderService, the attestation-agent
//     ocicrypt key provider the data hub serves on its socket.
//
// RESTAttestation and RESTResources adapt AA and CDH to package
// agent/rest, so that the loopback REST API answers from the same code.
//
// # One attestation
//
// AA's GetToken("kbs") answers the shared kbs.Client's cached token, and
// the data hub's KBC (GetResource, UnsealSecret, UnWrapKey, image keys and
// policies) should be that same client: then any mix of calls costs one
// KBS attestation per token lifetime. Upstream builds a new KBS client, and
// so attests anew, for every GetToken and every resource.
//
// # Semantics
//
// GetEvidence uses the runtime data unhashed as report data; the attester
// zero-pads it, and data longer than the TEE takes (64 bytes on sample, tdx
// and snp) is InvalidArgument. guestd has no additional (device) attesters:
// GetAdditionalEvidence answers empty bytes and GetAdditionalTees an empty
// list, as upstream does without devices.
//
// GetToken("kbs") answers {"token":"<JWT>"}. Upstream's answer also carries
// "tee_keypair", the TEE private key; guestd adds it only with
// AAConfig.ExposeTEEKey, for legacy clients (see its risk there), and
// never over REST. "coco_as" tokens are Unimplemented; other token types
// are InvalidArgument.
//
// ExtendRuntimeMeasurement refuses a malformed event (empty or white space
// in domain or operation, a newline in content) with InvalidArgument before
// anything else, then answers NOT_ENABLED without an event log, or
// NOT_SUPPORTED when the configuration enables one the TEE cannot extend,
// else records the event in the AAEL and answers OK.
//
// BindInitData follows upstream's gRPC agent (see AA.BindInitData): tdx and
// snp compare the digest with MRCONFIGID or HOSTDATA, tpm extends it into
// PCR 8, other TEEs succeed without checking; upstream's ttRPC agent does
// not implement the method (NotFound), guestd serves it on both transports.
//
// PullImage refuses a relative bundle_path or one with "." or ".."
// elements; concurrent pulls run concurrently (upstream serialises every
// pull of the guest behind one lock). With CDHConfig.Measurer each pull is
// recorded as upstream's data hub records it. SecureMount delegates to
// CDHConfig.SecureMounter and is Unimplemented without one. WrapKey is
// Unimplemented: layer keys are wrapped outside the guest.
//
// # Errors
//
// Upstream answers every failure with INTERNAL and an opaque message
// ("AA-KBC get token failed") and keeps the cause in its log. Here every
// error is an *Error: a status whose message names the operation and its
// subject, the cause with the failing step (the KBS step, URL and the KBS's
// own error detail; the registry's error; the image policy requirement; the
// layer and its digest) and the request id under which the call was
// logged, and whose code Classify derives from the cause:
//
//	InvalidArgument     bad input: resource URI, image reference, bundle
//	                    path, malformed sealed secret or annotation packet,
//	                    unsupported provider or algorithm named in it, AAEL
//	                    event, digest size, unknown token type
//	NotFound            KBS 404 or a 401 saying the resource does not exist,
//	                    a resource missing from an offline or SEV KBC, a
//	                    manifest, repository or blob the registry lacks
//	PermissionDenied    KBS 401/403 (policy denial, evidence refused, token
//	                    rejected), an image the security policy rejects, a
//	                    registry refusing credentials, a sealed secret or
//	                    layer key that does not verify or decrypt under its
//	                    key (wrong KEK)
//	Unavailable         KBS or registry unreachable (network, DNS, TLS
//	                    verification, 5xx, 429)
//	FailedPrecondition  the part is not configured (no KBS, no KBC, no
//	                    puller, no unsealer), no usable key for an encrypted
//	                    layer, init-data that does not match the TEE
//	AlreadyExists       the bundle is already mounted
//	Unimplemented       coco_as tokens, WrapKey, SecureMount without a
//	                    mounter
//	Canceled, DeadlineExceeded  the caller's context ended
//	Internal            anything else
//
// Logs (log/slog) carry the request id, the method and its non-secret
// subject; resources, secrets, tokens, keys and mount options are never
// logged.
package service
