#!/bin/bash
# build.sh [BIN]: build the e2e guest image (TEST-ONLY) into BIN/guest:
#   vmlinuz         Debian 12 linux-image-cloud-amd64 (through the meta package)
#   initrd.gz       busybox, guestd (make install), guestprobe, crun, runc,
#                   cryptsetup, mkfs.ext4, losetup, kernel modules, /init
#   kernel-version  the kernel release (uname -r)
#   manifest.txt    what went in
# BIN defaults to bin; BIN/guestd must exist (make build). Needs root (apt,
# device nodes). Installs what it needs with apt-get if missing; the kernel
# package is cached in .cache/guest/<package>. Reproducible: same inputs,
# same initrd.gz. Run by `make guest-image`.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
HERE=$REPO/test/guest/image
BIN=${1:-bin}
case $BIN in /*) ;; *) BIN=$REPO/$BIN ;; esac
OUT=$BIN/guest
CACHE=$REPO/.cache/guest
GO=${GO:-go}
KMETA=${KMETA:-linux-image-cloud-amd64}
# Host binaries copied in with their shared libraries. bash is /bin/sh:
# Debian's busybox-static sh runs its own applets before PATH (so `losetup
# --show` would be busybox's); bash looks commands up in PATH.
TOOLS=(/bin/bash /usr/bin/crun /usr/sbin/runc /usr/sbin/cryptsetup /usr/sbin/mke2fs /usr/sbin/losetup)
PKGS=(qemu-system-x86 cpio busybox-static crun runc cryptsetup-bin e2fsprogs mount gzip bash)

t0=$(date +%s.%N)
say() { printf 'guest-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (apt-get, device nodes in the initramfs)"
[ -x "$BIN/guestd" ] || die "$BIN/guestd missing: run make build first"

mkdir -p "$CACHE" "$BIN"
# One build at a time per tree (the cache and BIN/guest are shared).
exec 9>"$CACHE/.lock"
flock 9

TMP=$(mktemp -d "$BIN/.guest-image.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
ROOT=$TMP/root
STAGE=$TMP/out
mkdir -p "$ROOT" "$STAGE"

# --- packages --------------------------------------------------------------
APT_UPDATED=
apt_update() {
	if [ -z "$APT_UPDATED" ]; then
		say "apt-get update"
		apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
		APT_UPDATED=1
	fi
}
missing=()
for p in "${PKGS[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt_update
	say "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# --- kernel ----------------------------------------------------------------
resolve_kernel() {
	apt-cache depends "$KMETA" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
KPKG=$(resolve_kernel)
if [ -z "$KPKG" ]; then
	apt_update || true
	KPKG=$(resolve_kernel)
fi
if [ -z "$KPKG" ]; then
	# No package lists (offline?): the newest kernel already cached.
	KPKG=$(ls -1d "$CACHE"/linux-image-*/ 2>/dev/null | sort -V | tail -n 1 | xargs -r basename)
	[ -n "$KPKG" ] || die "cannot resolve $KMETA and no kernel is cached"
	say "cannot resolve $KMETA; using the cached $KPKG"
fi
KDIR=$CACHE/$KPKG
if [ ! -f "$KDIR/.complete" ]; then
	say "fetching $KPKG"
	rm -rf "$KDIR"
	kt=$TMP/kernel
	mkdir -p "$kt/deb" "$kt/x"
	(cd "$kt/deb" && apt-get download "$KPKG" >&2 2>/dev/null) || {
		apt_update
		(cd "$kt/deb" && apt-get download "$KPKG" >&2)
	}
	dpkg -x "$kt"/deb/*.deb "$kt/x"
	touch "$kt/x/.complete"
	mv "$kt/x" "$KDIR"
	rm -rf "$kt"
fi
KVER=$(ls -1 "$KDIR/lib/modules" | head -n 1)
[ -n "$KVER" ] && [ -f "$KDIR/boot/vmlinuz-$KVER" ] || die "$KDIR: no kernel in the package"
KCONFIG=$KDIR/boot/config-$KVER
KMODS=$KDIR/lib/modules/$KVER

# --- guestprobe ------------------------------------------------------------
say "building guestprobe"
(cd "$REPO" && CGO_ENABLED=0 "$GO" build -trimpath -tags containers_image_openpgp -ldflags '-s -w' \
	-o "$TMP/guestprobe" ./test/guest/cmd/guestprobe)

# --- root tree -------------------------------------------------------------
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,lib/x86_64-linux-gnu,lib64,etc/guestd-e2e,dev,proc,sys,run,tmp,root,var/lib,mnt}
ln -s /run "$ROOT/var/run"
chmod 1777 "$ROOT/tmp"
chmod 700 "$ROOT/root"
mknod -m 600 "$ROOT/dev/console" c 5 1
mknod -m 666 "$ROOT/dev/null" c 1 3

MANIFEST=$TMP/manifest
: >"$MANIFEST"
note() { printf '%s\n' "$*" >>"$MANIFEST"; }
note "# guestd e2e guest image (test/guest/image/build.sh)"
note "kernel: $KPKG ($KVER)"

# busybox and its applets (links are not made where a real tool goes).
cp /bin/busybox "$ROOT/bin/busybox"
note "busybox: $(dpkg-query -W -f '${Package} ${Version}' busybox-static)"
real_names=" $(for t in "${TOOLS[@]}"; do basename "$t"; done | tr '\n' ' ') sh mkfs.ext4 mkfs.ext3 mkfs.ext2 "
for a in $("$ROOT/bin/busybox" --list-full); do
	case "$real_names" in *" $(basename "$a") "*) continue ;; esac
	[ -e "$ROOT/$a" ] || [ -L "$ROOT/$a" ] || ln -s /bin/busybox "$ROOT/$a"
done

# copy_libs FILE: FILE's shared libraries (ldd) into the same paths.
copy_libs() {
	ldd "$1" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | while read -r lib; do
		[ -e "$ROOT$lib" ] && continue
		mkdir -p "$ROOT$(dirname "$lib")"
		cp -L "$lib" "$ROOT$lib"
		echo "$lib" >>"$TMP/libs"
	done
}
: >"$TMP/libs"
for t in "${TOOLS[@]}"; do
	[ -x "$t" ] || die "$t missing"
	mkdir -p "$ROOT$(dirname "$t")"
	rm -f "$ROOT$t"
	cp -L "$t" "$ROOT$t"
	copy_libs "$t"
	pkg=$({ dpkg -S "$t" || dpkg -S "${t#/usr}"; } 2>/dev/null | head -n 1 | cut -d: -f1 || true)
	note "tool: $t (${pkg:-?} $( [ -n "$pkg" ] && dpkg-query -W -f '${Version}' "$pkg"))"
done
ln -sfn bash "$ROOT/bin/sh"
ln -s mke2fs "$ROOT/usr/sbin/mkfs.ext4"
ln -s mke2fs "$ROOT/usr/sbin/mkfs.ext3"
ln -s mke2fs "$ROOT/usr/sbin/mkfs.ext2"
[ ! -f /etc/mke2fs.conf ] || cp /etc/mke2fs.conf "$ROOT/etc/mke2fs.conf"
sort -u "$TMP/libs" | sed 's/^/lib: /' >>"$MANIFEST"

# guestd, installed the way a guest image build installs it.
(cd "$ROOT" && find . -mindepth 1 | sort) >"$TMP/before-install"
if (cd "$REPO" && make -n install DESTDIR="$ROOT" >/dev/null 2>&1); then
	say "guestd: make install DESTDIR=..."
	(cd "$REPO" && make -s --no-print-directory install DESTDIR="$ROOT" BIN="$BIN" GO="$GO" >&2)
	note "guestd: make install DESTDIR"
else
	say "guestd: no make install target yet; copying $BIN/guestd and making the links"
	install -D -m 0755 "$BIN/guestd" "$ROOT/usr/local/bin/guestd"
	for n in attestation-agent confidential-data-hub api-server-rest; do
		ln -s guestd "$ROOT/usr/local/bin/$n"
	done
	note "guestd: fallback copy of $BIN/guestd + links (no make install target)"
fi
for n in guestd attestation-agent confidential-data-hub api-server-rest; do
	[ -x "$ROOT/usr/local/bin/$n" ] || die "/usr/local/bin/$n missing after installing guestd"
done
(cd "$ROOT" && find . -mindepth 1 ! -type d | sort | comm -13 "$TMP/before-install" - | sed 's/^\./guestd-install: /') >>"$MANIFEST"

install -m 0755 "$TMP/guestprobe" "$ROOT/usr/local/bin/guestprobe"
install -m 0755 "$HERE/init" "$ROOT/init"
cp -a "$HERE/files/." "$ROOT/"
note "guestprobe: /usr/local/bin/guestprobe (test/guest/cmd/guestprobe)"

# --- kernel modules --------------------------------------------------------
# name -> file index (module names compare with - and _ the same).
declare -A MODFILE
while read -r f; do
	n=$(basename "$f")
	n=${n%%.ko*}
	MODFILE[${n//-/_}]=$f
done < <(cd "$KMODS" && find kernel -name '*.ko' -o -name '*.ko.xz' -o -name '*.ko.zst' -o -name '*.ko.gz')
declare -A BUILTIN
while read -r f; do
	n=$(basename "$f" .ko)
	BUILTIN[${n//-/_}]=1
done <"$KMODS/modules.builtin"

modinfo_depends() { # FILE (uncompressed .ko)
	tr '\0' '\n' <"$1" | sed -n 's/^depends=//p' | head -n 1 | tr ',' ' '
}
declare -A ADDED
add_module() { # NAME: copy NAME and its depends= chain
	local n=${1//-/_} f src dst d
	[ -n "${ADDED[$n]:-}" ] && return 0
	ADDED[$n]=1
	f=${MODFILE[$n]}
	src=$KMODS/$f
	dst=$ROOT/lib/modules/$KVER/${f%.ko*}.ko
	mkdir -p "$(dirname "$dst")"
	case $f in
	*.ko.xz) xz -dc "$src" >"$dst" ;;
	*.ko.zst) zstd -qdc "$src" >"$dst" ;;
	*.ko.gz) gzip -dc "$src" >"$dst" ;;
	*) cp "$src" "$dst" ;;
	esac
	for d in $(modinfo_depends "$dst"); do
		if [ -n "${MODFILE[${d//-/_}]:-}" ]; then
			add_module "$d"
		fi
	done
}
loaded=() builtin=() missingm=()
while read -r m; do
	m=${m%%#*}
	m=${m//[[:space:]]/}
	[ -n "$m" ] || continue
	k=${m//-/_}
	if [ -n "${MODFILE[$k]:-}" ]; then
		add_module "$k"
		loaded+=("$m")
	elif [ -n "${BUILTIN[$k]:-}" ]; then
		builtin+=("$m")
	else
		missingm+=("$m")
	fi
done <"$HERE/modules"
printf '%s\n' "${loaded[@]}" >"$ROOT/etc/guestd-e2e/modules"
cp "$KMODS/modules.builtin" "$KMODS/modules.order" "$ROOT/lib/modules/$KVER/" 2>/dev/null || true
[ ! -f "$KMODS/modules.builtin.modinfo" ] || cp "$KMODS/modules.builtin.modinfo" "$ROOT/lib/modules/$KVER/"
"$ROOT/bin/busybox" depmod -b "$ROOT" "$KVER"
note "modules (loaded by /init): ${loaded[*]}"
note "modules built in: ${builtin[*]}"
note "modules missing: ${missingm[*]:-none}"
note "module files: $(cd "$ROOT/lib/modules/$KVER" && find kernel -name '*.ko' | sed 's|.*/||; s|\.ko$||' | sort | tr '\n' ' ')"
[ ${#missingm[@]} -eq 0 ] || say "modules missing from $KPKG: ${missingm[*]}"

# --- pack ------------------------------------------------------------------
# Fixed timestamps and sorted names: the same inputs give the same bytes.
find "$ROOT" -exec touch -h -d @0 {} +
(cd "$ROOT" && find . -mindepth 1 -printf '%P\0' | LC_ALL=C sort -z |
	cpio --null --create --format=newc --reproducible --owner=0:0 --quiet) | gzip -1 -n >"$STAGE/initrd.gz"
cp "$KDIR/boot/vmlinuz-$KVER" "$STAGE/vmlinuz"
echo "$KVER" >"$STAGE/kernel-version"
usize=$(du -sb "$ROOT" | cut -f1)
note "initramfs: $(stat -c %s "$STAGE/initrd.gz") bytes gzip -1, $usize bytes unpacked"
note ""
note "# files (path size, or path -> target; busybox applet links listed after)"
(cd "$ROOT" && find . -mindepth 1 ! -path './lib/modules/*' \( -type f -printf '/%P %s\n' -o -type l ! -lname /bin/busybox -printf '/%P -> %l\n' \) |
	LC_ALL=C sort) >>"$MANIFEST"
(cd "$ROOT" && find . -mindepth 1 -type l -lname /bin/busybox -printf '%f\n' | LC_ALL=C sort -u | tr '\n' ' ' |
	sed 's/^/busybox applets: /') >>"$MANIFEST"
echo >>"$MANIFEST"
mv "$MANIFEST" "$STAGE/manifest.txt"

# --- publish atomically ----------------------------------------------------
mkdir -p "$BIN"
if [ -e "$OUT" ]; then
	mv "$OUT" "$TMP/old"
fi
mv "$STAGE" "$OUT"
t1=$(date +%s.%N)
say "$OUT: vmlinuz $(stat -c %s "$OUT/vmlinuz") B, initrd.gz $(stat -c %s "$OUT/initrd.gz") B ($usize B unpacked), kernel $KVER, $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s"
