// Package decrypt decrypts ocicrypt-encrypted image layers for the puller.
//
// An encrypted layer (media type …+encrypted) is AES-256-CTR ciphertext
// of the plain blob, with an HMAC-SHA256 over the ciphertext. The public
// options (cipher, HMAC) are the layer annotation
// org.opencontainers.image.enc.pubopts; the private options (the symmetric
// key and nonce) are wrapped once per key scheme in annotations
// org.opencontainers.image.enc.keys.<scheme>. Decrypter unwraps them with
// the schemes it is configured for:
//
//   - jwe (org.opencontainers.image.enc.keys.jwe), with PrivateKeys;
//   - provider.attestation-agent
//     (org.opencontainers.image.enc.keys.provider.attestation-agent), with
//     the keyprovider.Unwrapper, which fetches the KEK from the KBS.
//
// It drives ocicrypt's building blocks (blockcipher, keywrap/jwe) directly:
// ocicrypt's process-wide key-wrapper registry, and the keyprovider
// configuration file it reads at init, play no part.
//
// # Authentication
//
// The HMAC can only be checked once the whole ciphertext has been read.
// ocicrypt holds back the last 10 KiB of plaintext until then, but
// everything before is released unauthenticated. So Layer returns a check
// function as well as the plaintext stream: the stream's final Read fails
// if the HMAC does not match, and check drains whatever the caller left
// unread and reports the verdict. A caller must call check, and trust
// nothing it extracted until check returns nil.
//
// The layer key is zeroed once the cipher is set up (ocicrypt keeps its
// own expanded copies inside the cipher and HMAC state, which the garbage
// collector reclaims). Nothing here logs or writes key material.
package decrypt
