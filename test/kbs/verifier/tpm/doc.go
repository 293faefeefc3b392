// Package tpm is the test KBS's verifier for "tpm" evidence, checking it as
// trustee's TPM verifier (deps/verifier/src/tpm) does: the AK is trusted,
// the quote is signed by it, the quote's PCR digest matches the reported PCR
// values and its qualifying data is the report data truncated or padded to
// 32 bytes. Trustee leaves the AK check to its policy (input.tpm.ak_public
// against reference values); this verifier takes the trusted AKs directly.
package tpm
