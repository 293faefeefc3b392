// Package sealed unseals CoCo sealed secrets, the values the
// confidential-data-hub's UnsealSecret takes (kata sends environment
// values and sealed-secret volume files that start with "sealed.").
//
// # Format
//
// A sealed secret is "sealed." followed by a compact JWS:
//
//	sealed.<b64url header>.<b64url payload>.<b64url signature>
//
// all base64url without padding. The header must be {"alg":"ES256",
// "kid":...}: the signature is ECDSA P-256 over SHA-256 of
// "<header>.<payload>" as written, r‖s in 64 bytes. The kid names the
// verification key, an EC P-256 JWK (a private JWK is accepted; its public
// half is used):
//
//   - a KBS resource URI (kbs:///repo/type/tag) is fetched through the KBC;
//   - anything else is a file name inside the key directory (default
//     /run/confidential-containers/cdh/sealed-secret, where the CDH
//     provisions credentials); names that leave the directory, by "..",
//     an absolute path or a symlink, are refused.
//
// With Unsealer.SkipVerification (upstream's
// skip_sealed_secret_verification / SKIP_SEALED_SECRET_VERIFICATION) the
// header and signature are not looked at, only the count of four
// dot-separated parts, so legacy secrets with fake headers and signatures
// still unseal.
//
// The payload is JSON with "version":"0.1.0" and a "type":
//
//   - "vault": {"provider","name","provider_settings","annotations"}, a
//     pointer to a secret held by a provider. Provider "kbs" (any case, as
//     upstream) fetches the resource URI name through the KBC. Upstream's
//     other vault providers (aliyun, aws) are not supported.
//   - "envelope": {"provider","key_id","encrypted_key","encrypted_data",
//     "wrap_type","iv","provider_settings","annotations"}, binary fields in
//     standard base64 with padding. Upstream decrypts encrypted_key with
//     the provider's KMS (aliyun, aws or ehsm: a KMS Decrypt call with
//     key_id and the annotations), which yields the data key, and then
//     decrypts encrypted_data with the data key: wrap_type "A256GCM" is
//     AES-256-GCM with a 12-byte iv, ciphertext‖16-byte tag and no
//     associated data; "A256CTR" is AES-256-CTR with a 16-byte iv (a
//     128-bit big-endian counter), unauthenticated. Those KMS providers are
//     not supported here. Upstream has no "kbs" envelope provider; this
//     package adds one (see NewKBSEnvelope): key_id is the KBS resource URI
//     of a 32-byte key-encryption key, and encrypted_key is the 32-byte
//     data key wrapped under it with AES key wrap (RFC 3394, JOSE
//     "A256KW"). Upstream's CDH refuses such secrets.
//
// # Differences from upstream
//
// Besides the kbs envelope provider: the "sealed." prefix is required when
// verifying too (upstream strips it only if present); a "crit" header is
// refused (no JWS extension is understood); provider_settings and
// annotations may be absent (upstream's parser requires them although its
// documentation calls annotations optional); kids that contain "://" must
// be valid resource URIs rather than being tried as file names.
//
// Errors wrap ErrMalformed, ErrVerification or ErrUnsupported, or the
// KBC's error with the URI fetched. Neither errors nor anything else in
// the package reveal secret values.
package sealed
