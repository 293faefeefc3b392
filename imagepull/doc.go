// Package imagepull pulls container images inside the TEE: registry access
// through containers/image's docker transport, the image security policy and
// its signatures (containers/image's signature package, with keys fetched
// from the KBS kept in memory), decryption of ocicrypt layers with keys from
// the KBS (package imagepull/decrypt), and one verified pass per layer into
// the layer store (package snapshot) through the secure applier (package
// rootfs), ending in a mounted bundle rootfs and its config.json.
//
// Every layer is checked before it is used: the blob against its manifest
// digest, the decrypted and decompressed tar against the config's diff_id;
// a layer still encrypted after decryption is refused. Any failure leaves no
// layer, snapshot or bundle that looks complete.
package imagepull
