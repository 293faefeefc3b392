// Package rest serves the loopback HTTP API of upstream api-server-rest
// (guest-components api-server-rest, default address 127.0.0.1:8006) from
// inside guestd. Where upstream relays each request over ttRPC to the
// attestation agent and the confidential data hub, this package calls them
// in-process through the small Attestation and Resources interfaces.
//
// Routes, selected by Config.Features as upstream's --features flag:
//
//	GET  /cdh/resource/<repo>/<type>/<tag>                     resource, all
//	GET  /aa/evidence?runtime_data=<s>[&encoding=base64]       attestation, all
//	GET  /aa/additional-evidence?runtime_data=<s>[&encoding=…] attestation, all
//	GET  /aa/token?token_type=<t>                              attestation, all
//	POST /aa/aael  {"domain","operation","content"}            attestation, all
//	GET  /info                                                 always
//
// Every request whose TCP peer is not a loopback address is refused with 403
// before anything else happens. A path under a disabled feature answers 404.
//
// Differences from upstream, all deliberate:
//   - /aa/token answers {"token":"…"} only. Upstream passes the agent's reply
//     through, and for KBS tokens that reply carries the ephemeral TEE
//     private key ("tee_keypair"), readable by every process in the pod.
//   - A known path with the wrong method answers 405 (with Allow), as the
//     upstream OpenAPI document says; upstream's router answers 404 for the
//     AA routes and serves the resource route for any method.
//   - A malformed AAEL body answers 400, as the OpenAPI document says, not
//     upstream's 500; bodies over MaxBodyBytes answer 413.
//   - The resource path must be three segments (else 404) that each obey the
//     resource-URI segment rule of package kbc/resource (else 400); upstream
//     forwards any path and lets the data hub fail.
//   - Query values are decoded byte-exact (upstream replaces invalid UTF-8
//     with U+FFFD), and /info with the attestation feature always carries
//     "additional_tees", empty or not, as the OpenAPI schema requires.
package rest
