// Package snapshot will own the guest's layer store and the overlay
// snapshots image layers are unpacked into. It is part of the image pull
// milestone (see README.md) and holds no code yet.
package snapshot
