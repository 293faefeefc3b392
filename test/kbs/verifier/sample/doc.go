// Package sample is the test KBS's verifier for the sample TEE, the
// counterpart of trustee's sample verifier: the evidence proves nothing
// about hardware, but its report data must be exactly the binding digest,
// so the nonce and key binding of the protocol is checked end to end.
package sample
