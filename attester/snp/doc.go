// Package snp is the attester for AMD SEV-SNP guests. It owns getting an
// extended attestation report (report plus the host's certificate table)
// from the AMD secure processor through a go-sev-guest QuoteProvider, and
// the evidence format trustee's SNP verifier takes: the sev crate's serde
// form of the report and of the certificate table.
package snp
