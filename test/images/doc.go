// Package images builds container images for tests, deterministically and
// without network, and puts them into real registries with real tools.
//
// Layers are built from Entry lists (files, dirs, symlinks, hardlinks,
// whiteouts, and hostile entries verbatim) as gzip, zstd or plain tar;
// Image and Index turn them into OCI (or Docker schema 2) manifests,
// configs with correct diff_ids, and multi-platform indexes. WriteOCILayout
// writes an OCI image layout; Push copies it into a registry with skopeo,
// and PushRaw speaks the registry push protocol directly, for hostile
// images skopeo would refuse. Busybox builds a realistic rootfs from
// Debian's busybox-static, and Big streams large incompressible layers to
// disk for benchmarks.
//
// Signatures are made by the real tools: cosign v2 (CosignSign, a
// sha256-<hex>.sig tag) and GPG simple signing through skopeo --sign-by
// (SkopeoSign, a lookaside signature-1 file). Policy helpers write the
// matching policy.json and registries.d files for the verifying side.
//
// Tests need skopeo, busybox-static and gnupg (apt-get install -y skopeo
// busybox-static gnupg) and a cosign v2 binary (test/scripts/deps.sh builds
// one into .cache/bin); without them they fail, never skip.
package images
