// Package kbs is the client of the KBS attestation protocol (RCAR, version
// 0.4.0): it attests the TEE to a Key Broker Service and fetches resources
// sealed to the TEE's ephemeral key. This is upstream's cc_kbc.
//
// One attestation serves every fetch while its token is valid: the token and
// the key it binds are cached until the token's exp, so N fetches cost one
// /auth + /attest handshake and N GETs. A 401 on a fetch (expired session,
// revoked token) triggers exactly one fresh attestation and one retry.
// Network errors and 5xx answers are retried with exponential backoff and
// jitter until the operation's deadline; the final error names the protocol
// step, the URL and the KBS's own ErrorInformation detail.
package kbs
