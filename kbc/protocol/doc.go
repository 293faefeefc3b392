// Package protocol holds the wire format of the KBS attestation protocol
// (RCAR, version 0.4.0, as trustee speaks it) and the rule that binds the
// KBS nonce and the TEE's ephemeral key into hardware evidence. Both the
// client (package kbs) and the test KBS use it, so the golden JSON tests here
// pin what goes on the wire.
package protocol
