// Package snp is the test KBS's verifier for SEV-SNP evidence. It owns
// checking evidence in trustee's SNP format against configured AMD trust
// roots, without network access: the VCEK or VLEK must come in the
// evidence's cert_chain. It then checks the report data binding and the
// checks trustee's verifier makes (VMPL 0, reported TCB equal to the
// endorsement key's TCB, CHIP_ID), and returns trustee's SNP claims.
package snp
