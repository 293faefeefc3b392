// Package snpfake is a fake AMD secure processor for tests: a go-sev-guest
// QuoteProvider that returns extended SEV-SNP attestation reports, for any
// report data, signed by a test-only VCEK certificate chain from
// go-sev-guest's testing package. It owns that chain and hands out its
// trust roots (ARK and ASK as PEM) for the verifier under test.
//
// It imports "testing" and registers go-sev-guest's test flags, so only
// tests may import it: never cmd/ or production packages.
package snpfake
