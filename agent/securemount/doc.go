// Package securemount is the confidential data hub's SecureMount for
// volume_type "block-device" with LUKS2 encryption: it formats or opens an
// encrypted block device with dm-crypt and exposes the plaintext inside
// the guest, as a mounted file system or as a device. Like upstream
// (guest-components, confidential-data-hub/hub/src/storage) it shells out
// to cryptsetup and mkfs.<type>, and mounts with mount(2).
//
// # Request
//
// SecureMount(ctx, "block-device", options, flags, mountPoint). Option
// names are upstream's; an option not listed is refused (ErrInvalid,
// naming it), so are upstream's ZFS-only pool and dataset.
//
//	deviceId        "MAJ:MIN", resolved through /sys/dev/block/MAJ:MIN/uevent
//	                (DEVNAME=) to /dev/<DEVNAME>. Wins over devicePath, as
//	                upstream; if both are given they must name one device.
//	devicePath      absolute, clean path of a block device (symlinks such as
//	                /dev/disk/by-id/… are fine). One of the two is required.
//	sourceType      "empty": format (all data is lost); "encrypted": open the
//	                existing LUKS2 device, no format, no mkfs. Required.
//	encryptionType  "luks2". Required. "zfs" (upstream's other mode) and
//	                anything else are ErrUnsupported.
//	key             "sealed.…" (unsealed by Config.Unsealer), "kbs:///repo/type/tag"
//	                or "kbs://host/…" (fetched by Config.KBC), "file:///abs/path"
//	                (read), or absent: a random 4096-byte key, valid only with
//	                sourceType "empty" (an ephemeral volume). The value is only
//	                echoed in errors and logs when it is a URI.
//	targetType      "fileSystem": mount the plaintext at mountPoint; "device":
//	                make mountPoint a symlink to /dev/mapper/<name>. Required.
//	filesystemType  fileSystem only: ext4 (default), ext3, ext2, xfs.
//	mkfsOpts        empty + fileSystem only: split on white space and passed
//	                verbatim to mkfs.<type> before the device (as upstream).
//	dataIntegrity   "true" or "false" (default): dm-integrity, see below.
//	mapperName      the mapping name, 1-100 of [A-Za-z0-9_-] starting with a
//	                letter or digit ("control" and cryptsetup's temporary-
//	                cryptsetup-* are refused). Default DefaultMapperName
//	                (mountPoint): "guestd-" + 16 hex digits of SHA-256 of the
//	                mount point (upstream: a random UUID), so a test can find it.
//
// flags are mount(8) flags, applied left to right: ro, rw, nosuid, suid,
// nodev, dev, noexec, exec, sync, async, dirsync, noatime, relatime,
// strictatime, nodiratime, diratime, lazytime, nolazytime, defaults.
// Without an atime flag the mount gets noatime, as upstream's (which
// ignores flags). Anything else is refused. A device target takes only
// ro, rw and defaults; "ro" opens the mapping read-only (cryptsetup
// --readonly) for a device target or an encrypted source, and makes the
// mount read-only; an empty device formatted as a file system keeps a
// writable mapping for mkfs and is mounted read-only.
//
// mountPoint must be absolute and clean. For a fileSystem target it is a
// directory, created 0700 with any missing parents if absent, that is
// not already a mount point; for a device target nothing may exist there
// (its parent is created if missing).
//
// # Steps
//
// Everything above is validated first, and then, still without changing
// anything: the device is resolved and must be a block device not mounted
// anywhere, without holders (device-mapper, md) and not already used by
// this Mounter; the mount point, the mapping name and /dev/mapper/<name>
// must be free; a kbs:// or sealed key needs its source configured
// (ErrNoKeySource); an encrypted source must pass the header checks below.
// Then Config.BeforeMount may veto, and the key is fetched (a formatting
// key must have at least 32 bytes). Only then:
//
//	mkdir -p <mountPoint>                  (or its parent, for a device target)
//	[empty, random key] create <HeaderDir>/<name>.header, 16 MiB, 0600
//	[empty]    cryptsetup --batch-mode luksFormat --type luks2 --cipher aes-xts-plain64
//	             --key-size 512 --sector-size 4096 --pbkdf pbkdf2 --hash sha256
//	             --pbkdf-force-iterations 1000 --key-file=- [--header H]
//	             [--integrity hmac-sha256 --integrity-no-wipe] <device>
//	           cryptsetup --batch-mode open --type luks2 --key-file=- [--header H]
//	             [--readonly] [--integrity-no-journal] <device> <name>
//	[header]   remove the header file
//	[device]   ln -s /dev/mapper/<name> <mountPoint>
//	[fileSystem, empty] mkfs.<type> -F|-f [mkfsOpts] /dev/mapper/<name>
//	[fileSystem] mount(/dev/mapper/<name>, <mountPoint>, <type>, flags)
//
// The key reaches cryptsetup on its standard input only (--key-file=-,
// read in full, no newline handling: a file:// key file works as it does
// with cryptsetup --key-file); it is never in argv, in a file, or in a
// log, and every buffer holding it is zeroed when the request ends.
//
// If a step fails, the steps done are undone in reverse (unmount, remove
// the symlink, cryptsetup close, remove the header, remove the created
// directories), even if the context is done, and the error is returned;
// if an undo step fails too, both are reported and the volume stays
// recorded for Close. Formatting cannot be undone, but it only happens to
// sourceType "empty". Close undoes every volume, last mounted first.
// Requests and Close are serialised per Mounter; mounting the same device,
// mount point or mapping name twice fails with ErrExists.
//
// # Choices
//
// Cipher. aes-xts-plain64 with a 512-bit key (AES-256), 4096-byte
// sectors: upstream's choice and cryptsetup's default cipher.
//
// PBKDF. The keyslot is protected with PBKDF2-SHA256 at 1000 iterations
// (cryptsetup's minimum) instead of cryptsetup's default Argon2id, which
// costs up to 1 GiB of memory (capped at half the RAM) and about 2 s per
// format and per open: in a small guest that is slow and can OOM. A PBKDF
// only matters for low-entropy passphrases; the keys here are 4096 random
// bytes or secrets the KBS releases to an attested guest. So a formatting
// key shorter than 32 bytes is refused (upstream's test passphrase "test"
// would be): the key must carry its own entropy. Opening an existing
// device uses whatever PBKDF its header names.
//
// Header location. An ephemeral volume (empty, random key) gets a
// detached header in HeaderDir (default
// /run/confidential-containers/cdh/luks-headers, a tmpfs, as upstream
// since PR #1313): the host never sees a LUKS header, the device is
// encrypted from sector 0, and formatting writes nothing to the device.
// Unlike upstream, the file is removed as soon as the mapping is open
// (the kernel holds the volume key; close does not need the header), so
// it costs 16 MiB of guest memory only for a moment. An empty device with
// a supplied key (kbs://, sealed, file://) gets the header on the device
// instead (upstream detaches it there too and loses it at reboot), so the
// same key reopens it later with sourceType "encrypted": that is what a
// supplied key is for.
//
// Header checks. LUKS2 metadata is not authenticated, so before opening
// an encrypted source its header (cryptsetup isLuks --type luks2, then
// luksDump --dump-json-metadata) must have only "crypt" segments, none
// with a null or ECB cipher, no mandatory requirements (unfinished
// reencryption), and, with dataIntegrity "true", keyed integrity
// (hmac(…), poly1305, aead) on every segment: a host that rewrites the
// header to a plaintext segment, or strips integrity, is refused
// (ErrNotLUKS2) instead of getting the guest's writes in the clear or
// unauthenticated. With dataIntegrity "false" an encrypted source may or
// may not have integrity.
//
// Integrity. dataIntegrity "true" formats with --integrity hmac-sha256
// (AES-XTS plus an HMAC-SHA256 tag per 4 KiB sector in dm-integrity,
// which cryptsetup sets up) and --integrity-no-wipe, as upstream: wiping
// writes every sector of the device (minutes for tens of GiB, inside the
// container's creation timeout). Without the wipe, a sector's tag is
// valid only once the sector has been written, so a read of a
// never-written sector fails with an I/O error. mke2fs reads some blocks
// before writing them (its superblock and the backup superblocks are
// written partially, through a read-modify-write), and ext4 lazily
// initialises inode tables and the journal. So, as upstream: the first
// block is zeroed, "mkfs.<ext> -n" lists the backup superblocks and those
// blocks are zeroed (in Go, through the same seam), and the real mkfs
// gets -E lazy_itable_init=0,lazy_journal_init=0 merged into the
// caller's last -E (a caller's =1 for either is refused). Only ext2/3/4
// may be formatted with integrity. The dm-integrity journal (atomic
// data+tag writes across a crash) is kept, except for ephemeral volumes,
// opened with --integrity-no-journal: they do not survive a crash anyway.
//
// Device target. As upstream, mountPoint becomes a symlink to
// /dev/mapper/<name> (not a bind mount of the node); Close removes it.
//
// Not done: ZFS, alibaba-cloud-oss, dm-crypt workqueue bypass flags
// (--perf-no_*_workqueue: faster on some setups, but they need kernel
// 5.9+ and fail the open otherwise), discards (they would leak which
// blocks are used).
//
// # Errors
//
// Errors name the mount point and the step, and wrap a class: ErrInvalid
// and ErrUnsupported (InvalidArgument), ErrExists (AlreadyExists),
// ErrNoDevice (NotFound), ErrNotLUKS2 and ErrNoKeySource
// (FailedPrecondition), the KBC's or unsealer's own errors for a key that
// cannot be had, the context's error when it ends first. A failed command
// reports its command line (never the key) and the end of its standard
// error.
//
// # Requirements
//
// In the guest: cryptsetup (Debian: cryptsetup-bin), mkfs.ext4
// (e2fsprogs; xfsprogs for xfs), the kernel modules dm_mod, dm_crypt,
// dm_integrity (dataIntegrity) and the crypto it uses: aes (aesni_intel
// or aes_generic), xts, ecb, sha256, hmac, authenc (integrity), and the
// user-space crypto API cryptsetup uses for keyslots and cipher checks
// (af_alg, algif_skcipher, algif_hash, algif_aead); plus udev with
// device-mapper rules (the dmsetup package), or no udev at all
// (libdevmapper then makes /dev/mapper nodes itself). Root
// (CAP_SYS_ADMIN).
//
// # Testing
//
// Unit tests run the plan against a recording seam (sys): every option,
// flag and mount point rule, key sources (kbs:// against the real test
// KBS, sealed through a fake unsealer, file://, random), deviceId with a
// fake /sys tree, the exact commands of each kind of request, and a
// failure at each step with the undo steps that must follow. Tests
// against the real cryptsetup run luksFormat on loop devices and check
// the header with luksDump; the test host has no device-mapper, so the
// open fails there, and the tests check that the failure is reported and
// rolled back (and that integrity formatting, which needs device-mapper,
// fails cleanly). The end-to-end test is test/e2e: it boots a QEMU guest
// with these modules, calls SecureMount over gRPC on a loop device and on
// a virtio disk, and checks "cryptsetup status" and the mount.
package securemount
