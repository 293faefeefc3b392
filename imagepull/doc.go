// Package imagepull pulls container images inside the TEE: registry access
// through containers/image's docker transport, the image security policy and
// its signatures (containers/image's signature package, with keys fetched
// from the KBS kept in memory), decryption of ocicrypt layers with keys from
// the KBS (package imagepull/decrypt), and one verified pass per layer into
// the layer store (package snapshot) through the secure applier (package
// rootfs), ending in a mounted bundle rootfs and its config.json.
//
// Layer blobs of one image download concurrently (Options.MaxConcurrentLayers)
// into a spool in the work dir, exactly as served (compressed, and encrypted
// for encrypted layers: decrypted content never touches the disk until it
// is unpacked); the layer whose turn it is streams from the spool through
// decryption, decompression and the applier while it downloads, so each
// blob crosses the network once and is read once.
//
// Every layer is checked before it is used: the blob against its manifest
// digest, the decrypted and decompressed tar against the config's diff_id;
// a layer still encrypted after decryption is refused. Any failure leaves no
// layer, snapshot or bundle that looks complete.
package imagepull
