// Package snapshot is the guest's layer store: it keeps each unpacked image
// layer once, keyed by its chain ID, and mounts the rootfs of a container
// bundle as an overlay of a layer chain with a private writable upper
// directory. It is what image-rs's "layers" and "overlay" directories are,
// plus the unmount and garbage collection image-rs does not have.
//
// # On-disk layout
//
// Everything lives under the root given to [Open] (guestd passes a
// directory under /run/kata-containers/image/):
//
//	<root>/                  0700
//	  lock                   flock(2)ed by the open Store: one Store per root
//	  tmp/                   work in progress; emptied by Open
//	  layers/<N>/            0700, one layer's files (an overlay lowerdir)
//	  overlay/<M>/           0700, one mounted bundle's private dirs
//	    upper/               0755, the overlay upperdir (the container's "/")
//	    work/                0700, the overlay workdir
//	  meta/layers/<N>.json   layer record: {"version","id","chain_id","parent"}
//	  meta/bundles/<M>.json  bundle record: {"version","id","bundle","rootfs","top"}
//
// N and M are decimal integers handed out in increasing order and never
// reused while a Store is open (Open continues after the largest number it
// finds). Short numeric names keep the overlay lowerdir option small: with
// 128 layers the absolute paths alone would exceed the 4096-byte mount data
// page (guest-components #901). The mount goes through containerd's
// core/mount, which for long options changes to the common parent directory
// (layers/) and passes the lowerdirs relative to it ("128:127:...:1").
//
// The upper directory is 0755 (root-owned), as containerd's overlay
// snapshotter makes it, because the overlay takes the attributes of its
// root directory from it: a 0700 upper would make the container's "/"
// unreadable to non-root users. It is shielded from everything outside the
// container by its 0700 parents. Layer roots are reset to 0700 after apply;
// a lower root's mode never shows through an overlay that has an upper.
//
// # Atomicity and crash recovery
//
// A layer is built in a fresh directory under tmp/, renamed to layers/<N>
// once apply has succeeded, and only then recorded (record written to tmp/
// and renamed into meta/layers/). A bundle record is written before its
// upper directory is made and the overlay is mounted, and deleted last in
// [Store.Remove]. Renames make every step atomic against a crash of the
// process; nothing is fsynced except the records, because the store is
// meant to live on the guest's tmpfs, which a reboot empties anyway.
//
// [Open] repairs what a crash or a reboot left behind:
//   - it empties tmp/ (half-applied layers, half-written records, layers a
//     garbage collection was deleting);
//   - it drops layer records that cannot be read, whose directory is
//     missing, or whose parent chain does not lead to a base layer, and then
//     deletes every layers/ entry without a record;
//   - it keeps a bundle record only if its rootfs is still mounted as an
//     overlay whose upperdir is the record's upper directory (guestd was
//     restarted, the guest was not); the bundle's layers stay referenced
//     and [Store.Remove] works as before. Any other bundle record (the guest
//     rebooted, or the process died between writing the record and
//     mounting, or between unmounting and deleting it) is deleted with its
//     overlay/<M> directory. Open never touches bundle directories;
//   - it deletes overlay/ entries without a kept record, unless the kernel
//     still uses one as an upperdir.
//
// # Remove
//
// [Store.Remove] unmounts <bundle>/rootfs. If the mount is busy it is
// detached lazily (MNT_DETACH) and Remove still succeeds: processes that
// hold files in it keep their view, and the layers it uses stay referenced
// until the Store is reopened, so [Store.GC] never deletes a lowerdir from
// under them; the bundle's upper and work directories are deleted at once.
// Remove then deletes the empty rootfs directory (a non-empty one, which
// only a writer bypassing the mount can cause, is left alone), the bundle's
// config.json, the upper and work directories and the record. The bundle
// directory itself is left in place: kata-agent created it and removes it.
// Removing a bundle the store has no record of is a no-op that returns nil,
// so Remove can be repeated; a failed Remove keeps the record and can be
// retried.
//
// # Garbage collection
//
// A layer is referenced by every mounted bundle whose chain contains it,
// by every Mount in progress on such a chain, and by every EnsureLayer in
// progress whose parent chain contains it. [Store.GC] deletes the layers
// nobody references, children before parents. It cannot know that a caller
// is between two calls (e.g. a pull between its EnsureLayer calls and its
// Mount), so such a caller may see [ErrNotFound] after a concurrent GC and
// should run its EnsureLayer calls again (layers still present cost nothing).
//
// # Concurrency
//
// A Store is safe for concurrent use. EnsureLayer for different chain IDs
// applies in parallel; concurrent calls for the same chain ID run apply once
// and the others wait for and share its outcome. A failure is not cached:
// the next call applies again, and a waiter whose own context is live
// retries at once if the failed call's context had been cancelled.
package snapshot
