// Package rootfs applies image layers to overlay snapshot directories and
// writes a container bundle's OCI runtime config.
//
// # Applying a layer
//
// Apply unpacks one uncompressed OCI layer tar stream into the upper
// directory of an overlay snapshot, using containerd's pkg/archive applier
// (which resolves every name and hard-link target inside the directory,
// chroot-style) behind a filter that refuses what no legitimate image
// needs. The rules below are a contract; the tests check each of them,
// and what containerd's applier alone does in each case.
//
// Nothing is ever created, changed or linked outside the directory.
// For each hostile entry the outcome is either "refused" (Apply fails with
// an *EntryError naming the entry and wrapping the reason) or "contained"
// (the entry is applied as if the directory were the root):
//
//	entry                                         outcome
//	name with ".." leaving the root (../x,        refused, ErrUnsafePath
//	  a/../../x, ../.wh.x)
//	absolute name (/etc/x)                        contained: <dir>/etc/x
//	name through a symlink the layer created      refused, ErrUnsafePath
//	  earlier (l -> / then l/etc/x;
//	  l -> ../../.. then l/x; l/.wh.x;
//	  l/.wh..wh..opq)
//	name replacing such a symlink (l -> /, then   contained: the symlink is
//	  directory l/)                                 replaced
//	symlink with any target (/, ../../..)         contained: created as is;
//	                                                targets are read inside
//	                                                the container
//	hard link, absolute target (/usr/bin/x)       contained: <dir>/usr/bin/x;
//	                                                fails (naming the entry)
//	                                                if the layer lacks it
//	hard link, target with ".." leaving the root  refused, ErrUnsafePath
//	hard link, target through a symlink           refused, ErrUnsafePath
//	hard link, target a/../x                      contained: linked to x,
//	                                                cleaned lexically like
//	                                                names, whatever a is
//	hard link to a symlink (s -> /etc/passwd)     contained: links the
//	                                                symlink, not its target
//	hard link to the root                         refused, ErrUnsafePath
//	hard link to a file of a lower layer only     fails, naming the entry
//	whiteout of "", "." or ".." (.wh., .wh..,     refused, ErrBadWhiteout
//	  .wh...)
//	opaque marker on the root (.wh..wh..opq)      refused, ErrBadWhiteout:
//	                                                overlayfs ignores opacity
//	                                                on a layer's root
//	other AUFS metadata (.wh..wh.plnk, ...)       refused, ErrBadWhiteout
//	.wh. name used as a directory (.wh.d/x)       refused, ErrBadWhiteout
//	character or block device (even 0/0)          refused, ErrDeviceNode
//	old GNU sparse, reserved or unknown types     refused, ErrUnsupportedType
//	trusted.* or user.overlay.* xattr             contained: dropped
//
// Whiteouts are converted to overlay's native form (containerd's
// OverlayConvertWhiteout): ".wh.<name>" becomes a 0/0 character device
// <name> owned as the entry says, and ".wh..wh..opq" sets
// trusted.overlay.opaque=y on its directory. A whiteout for a name the same
// layer already created fails (the image-spec allows whiteouts to hide
// only lower layers).
//
// Regular files, directories, symlinks, hard links and FIFOs are created
// with the mode (setuid, setgid and sticky bits included), uid/gid, mtime
// (to the nanosecond with PAX) and xattrs of their entry; a hard link entry's
// metadata applies to the inode it shares. Directories the tar implies
// without listing them copy owner, mode, times and xattrs from the topmost
// of ApplyOptions.Parents that has them, else get 0755 root:root; a lower
// layer's symlink is not followed (the new directory hides it in the merged
// view, as with containerd). Block and character devices are refused: an
// image has no business shipping them, and whiteouts come from conversion,
// never from the tar.
//
// Resource limits: more than MaxEntries entries (DefaultMaxEntries, 1<<20)
// or regular-file entries (whiteout markers included) declaring more than
// MaxBytes in total (DefaultMaxBytes, 64 GiB) fail with ErrLimit as soon as
// the offending header is read, before any of its content is read or
// written, so a decompression bomb or a sparse file claiming petabytes
// costs neither memory nor disk. Sparse files (PAX formats) are written
// expanded and count at their full size.
//
// On success Apply has consumed the stream to its end, so a digest taken
// by the caller covers it: after the end-of-archive marker it reads and
// discards up to MaxTrailingBytes (1 MiB) of padding, and fails with
// ErrLimit if more follows. It never seeks over content, even if the
// reader can seek.
//
// On failure Apply stops at once and leaves whatever it had written in the
// directory; the caller (the snapshot store) removes the whole directory.
//
// # Runtime config
//
// WriteSpec writes <bundle>/config.json, the OCI runtime spec kata-agent
// reads after ImagePullService.PullImage, built by SpecFromImage: root.path
// "rootfs"; process.args = Entrypoint + Cmd; process.env = Env plus a
// default PATH when none is set; process.cwd = WorkingDir or "/";
// process.user resolved from the image's User against the rootfs's
// /etc/passwd and /etc/group, which are read without ever following a link
// out of the rootfs; annotations per image-spec's conversion rules; and
// containerd's default Linux namespaces, mounts, capabilities and masked
// paths. An image with neither Entrypoint nor Cmd gets no process.args,
// as with image-rs: kata takes the command from the pod.
package rootfs
