#!/usr/bin/env bash
# Installs what the tests need, if missing; a no-op (well under a second)
# when everything is there. Run by `make test`, `make bench` and
# `make demo` as root on a fresh Debian 12 machine.
#
#   Debian packages: swtpm swtpm-tools (TPM tests), docker-registry, skopeo,
#     busybox-static, gnupg, ca-certificates (test/registry, test/images),
#     umoci (the baseline of make bench).
#     Fresh machine: apt-get update + install takes ~15-30 s.
#   cosign v2.6.5, built with `go install` into .cache/bin/cosign (the
#     test/images signing tests use it): 2-5 min the first time with cold Go
#     caches on 2 cores (a few GB of module and build cache), ~10 s with warm
#     caches. Set GUESTD_COSIGN=/path/to/cosign to use another binary, or
#     GUESTD_SKIP_COSIGN=1 to skip the build (the cosign tests then build it
#     themselves).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

need=()
command -v swtpm >/dev/null 2>&1 || need+=(swtpm swtpm-tools)
[ -x /usr/bin/docker-registry ] || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
# umoci: the baseline `make bench` compares guestctl pull against.
command -v umoci >/dev/null 2>&1 || need+=(umoci)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler) # agent/api codegen check
command -v openssl >/dev/null 2>&1 || need+=(openssl) # make demo makes an admin key
[ -x /usr/bin/time ] || need+=(time) # GNU time measures peak RSS in make bench
# The tests need the static busybox (it runs inside image rootfs without a
# libc); Debian's "busybox" package is dynamically linked.
case $(dpkg-query -W -f='${db:Status-Abbrev}' busybox-static 2>/dev/null || true) in
ii*) ;;
*) need+=(busybox-static) ;;
esac
{ command -v gpg && command -v gpg-agent && command -v gpgconf; } >/dev/null 2>&1 || need+=(gnupg)
[ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
# agent/securemount formats LUKS2 headers on loop devices (no device-mapper
# on this host: mapping, mkfs and mount run in the QEMU guest of make e2e).
command -v cryptsetup >/dev/null 2>&1 || need+=(cryptsetup-bin)
command -v mkfs.ext4 >/dev/null 2>&1 || need+=(e2fsprogs)
command -v losetup >/dev/null 2>&1 || need+=(mount)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}; run as root or: apt-get install -y --no-install-recommends ${need[*]}" >&2
		exit 1
	fi
	echo "deps: installing ${need[*]}"
	start=$SECONDS
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
	echo "deps: apt done in $((SECONDS - start)) s"
fi

# cosign v2 (v3 writes sigstore bundles as OCI referrers, which
# containers/image does not read). The version stamp makes a stale or
# foreign binary in .cache/bin get rebuilt.
cosign_version=v2.6.5
if [ -n "${GUESTD_COSIGN:-}" ]; then
	[ -x "$GUESTD_COSIGN" ] || { echo "deps: GUESTD_COSIGN=$GUESTD_COSIGN is not executable" >&2; exit 1; }
elif [ -z "${GUESTD_SKIP_COSIGN:-}" ]; then
	bin=$root/.cache/bin
	stamp=
	[ -f "$bin/cosign.version" ] && read -r stamp <"$bin/cosign.version" || true
	if [ ! -x "$bin/cosign" ] || [ "$stamp" != "$cosign_version" ]; then
		command -v go >/dev/null 2>&1 || { echo "deps: go is needed to build cosign" >&2; exit 1; }
		mkdir -p "$bin"
		# The Go test helper (test/images.Cosign) takes the same lock.
		exec 9>"$bin/.cosign.lock"
		flock 9
		stamp=
		[ -f "$bin/cosign.version" ] && read -r stamp <"$bin/cosign.version" || true
		if [ ! -x "$bin/cosign" ] || [ "$stamp" != "$cosign_version" ]; then
			echo "deps: building cosign $cosign_version into .cache/bin (first time only: 2-5 min with cold Go caches, ~10 s warm)"
			start=$SECONDS
			tmp=$(mktemp -d "$bin/.build-XXXXXX")
			trap 'rm -rf "$tmp"' EXIT
			(cd "$tmp" && GOBIN=$tmp GOFLAGS=-buildvcs=false go install "github.com/sigstore/cosign/v2/cmd/cosign@$cosign_version")
			mv -f "$tmp/cosign" "$bin/cosign"
			echo "$cosign_version" >"$bin/cosign.version"
			echo "deps: cosign built in $((SECONDS - start)) s"
		fi
		exec 9>&-
	fi
fi
