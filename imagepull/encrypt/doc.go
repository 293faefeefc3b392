// Package encrypt is the tenant tool behind `guestctl image encrypt`: it
// copies an image, encrypting every layer for CoCo guests, and registers
// the key-encryption key (KEK) in the KBS so that only attested guests can
// decrypt it.
//
// Encrypt draws a fresh random 32-byte KEK, stores it in the KBS under the
// key id (a kbs:///repo/type/tag resource) through the admin API, and only
// then copies the image with containers/image, ocicrypt encrypting each
// layer under its own random key and wrapping that key under the KEK into
// an attestation-agent annotation packet (keyprovider.Wrapper). The
// destination is an OCI image manifest without signatures (encryption
// changes every layer digest). The KEK never touches the disk and is zeroed
// when Encrypt returns.
//
// Registering a KEK under an existing key id replaces the old KEK: images
// encrypted under the old one can no longer be decrypted, and this holds
// even when the copy then fails (the KEK stays registered, unused). Encrypt
// checks both ends before registering (the source is readable, has layers,
// none encrypted; a registry destination answers with push access) to make
// that unlikely, but a push can still break midway. Use a key id per image
// (or per rollout).
//
// # ocicrypt's global registry
//
// containers/image finds key wrappers only through ocicrypt's process-wide
// registry. Register (called by Encrypt) registers one stateless
// keyprovider.Wrapper as "provider.attestation-agent", once per process
// (sync.Once); each Encrypt passes its KEK and key id in the EncryptConfig
// parameters (keyprovider.EncryptParameters), so concurrent Encrypt calls
// do not share key state. The registration replaces any
// "provider.attestation-agent" key provider ocicrypt loaded from
// OCICRYPT_KEYPROVIDER_CONFIG. ocicrypt's registry is an unsynchronised
// map: a program that uses ocicrypt from other goroutines should call
// Register once at start-up, before they run.
package encrypt
