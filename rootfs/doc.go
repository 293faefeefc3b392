// Package rootfs will own applying image layers securely (no path escapes,
// whiteouts, ownership) and laying out a container bundle: the mounted
// rootfs and the OCI runtime config. It is part of the image pull milestone
// (see README.md) and holds no code yet.
package rootfs
