// Command guestctl is guestd's command-line client: it fetches a resource
// from a KBS, attests and prints the token's claims, or prints the TEE's
// evidence, running the same code paths as the daemon in-process.
//
//	guestctl get-resource [--kbs URL] [--kbs-cert PEM] [--tee NAME] [-o FILE] kbs:///repo/type/tag
//	guestctl attest [--kbs URL] [--kbs-cert PEM] [--tee NAME]
//	guestctl evidence [--tee NAME] --runtime-data STR
//
// Without --kbs, get-resource and attest use agent.aa_kbc_params from the
// kernel command line (AA_KBC_PARAMS in the environment wins), as the
// attestation agent does.
package main
