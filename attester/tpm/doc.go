// Package tpm is the attester for a TPM 2.0: it owns the connection to the
// TPM, the attestation key (AK) and the evidence format trustee's TPM
// verifier takes (see Evidence and ParseEvidence).
//
// Evidence is a TPM2_Quote by the AK over PCRs 0 to 23 of the SHA-256 bank,
// with the report data truncated or zero-padded to 32 bytes as the quote's
// qualifying data, plus the PCR values and the AK public key.
//
// The device is a TPM character device (default /dev/tpmrm0, else
// /dev/tpm0; upstream reads an override from env AA_TPM_DEVICE) or
// "unix:PATH" for a swtpm-style socket. The AK is the key persisted at
// Options.AKHandle (default 0x81010002; upstream env AA_TPM_AK_HANDLE, see
// ParseAKHandle). If that handle is empty, Open creates an RSA AK in the
// owner hierarchy and persists it there, so the same AK serves every later
// Open. Callers read the environment; this package does not.
package tpm
