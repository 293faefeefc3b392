// Package keyprovider is CoCo's "attestation-agent" ocicrypt key provider:
// the layer-key wrapping scheme of encrypted container images whose keys
// live in a KBS.
//
// An encrypted layer carries the annotation
// org.opencontainers.image.enc.keys.provider.attestation-agent, the
// standard base64 of an annotation packet (see AnnotationPacket):
//
//	{"kid":"kbs:///default/key/1","wrapped_data":"<b64>","iv":"<b64>","wrap_type":"A256GCM"}
//
// wrapped_data is ocicrypt's private layer-cipher options JSON (which holds
// the layer's symmetric key) encrypted under a key-encryption key (KEK):
// the 32-byte KBS resource kid names. wrap_type A256GCM is AES-256-GCM with
// a 12-byte IV (ciphertext‖tag), A256CTR is AES-256-CTR with a 16-byte IV
// (unauthenticated). Version 2 packets, which the confidential-data-hub
// reads, add "version":"0.1.0", "provider":"kbs", "provider_settings" and
// "annotations"; only the kbs provider is supported here.
//
// The package has three parts:
//
//   - Unwrapper is the guest side: it fetches the KEK through a kbc.Client
//     and decrypts wrapped_data. Package imagepull/decrypt calls it
//     directly; it also satisfies ocicrypt's keywrap.KeyWrapper for
//     binaries that want to register it with ocicrypt.
//   - Wrapper is the tenant side (upstream's coco_keyprovider): it wraps
//     the private options under a KEK into a version 1 packet. Registered
//     with ocicrypt as "provider.attestation-agent", it reads the KEK and
//     kid from the EncryptConfig (see EncryptParameters), so one registered
//     instance serves every caller.
//   - Server serves ocicrypt's keyprovider gRPC protocol
//     (keyprovider.KeyProviderService) with both: WrapKey with upstream
//     coco_keyprovider's parameters
//     (provider:attestation-agent:keyid=kbs:///...::keypath=...::algorithm=A256GCM),
//     registering each KEK with a KBS when configured, and UnWrapKey
//     through an Unwrapper.
//
// Nothing in this package logs or stores key material; KEKs fetched or
// generated here are zeroed once used.
//
// Differences from upstream, deliberate:
//   - WrapKey without keypath generates one random KEK per kid and keeps
//     it until Server.Close (upstream draws a new KEK on every call, so the
//     last layer's KEK replaces the earlier layers' in the KBS and a
//     multi-layer image under one keyid cannot be decrypted);
//   - the algorithm parameter is honoured (upstream coco_keyprovider reads
//     it from the keypath key, so it always wraps with A256GCM);
//   - without keyid the generated kid is kbs:///default/image-kek/<uuid>
//     (upstream writes /default/image-kek/<uuid>, which the CDH cannot
//     parse; Unwrapper accepts both);
//   - sample=true (a published hard-coded KEK with an all-zero IV) is
//     refused, and unknown parameters are errors rather than ignored;
//   - a KEK registration the KBS refuses fails WrapKey (upstream ignores
//     the HTTP status).
package keyprovider
