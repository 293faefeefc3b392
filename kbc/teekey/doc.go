// Package teekey owns the TEE's ephemeral key pair: the key whose public
// half the evidence binds and to which the KBS seals resources. It generates
// the key, exports the public half as the protocol's JWK, and opens the JWE
// responses sealed to it. The private key never leaves the process.
package teekey
