// Package detect chooses the attester for the machine guestd runs on: it
// probes for each supported TEE in upstream's detection order (tdx, snp,
// tpm), and falls back to the sample attester, loudly, when it finds none.
// New builds a named attester instead, for the --tee / config override.
package detect
