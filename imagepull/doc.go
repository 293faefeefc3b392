// Package imagepull will own pulling container images inside the TEE:
// registry access, the image security policy and its signatures, and
// decryption of ocicrypt layers with keys from the KBS, handing verified
// layers to package snapshot and the bundle to package rootfs. It is the
// next milestone (see README.md) and holds no code yet.
package imagepull
