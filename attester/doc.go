// Package attester defines how guestd obtains hardware evidence from the
// trusted execution environment it runs in.
//
// The interface lives here; each TEE has a sibling package named after it
// (sample, snp, tdx, tpm) and the package detect picks one for the current
// machine. The package conformance checks that any implementation behaves.
package attester
