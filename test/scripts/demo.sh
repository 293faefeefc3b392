#!/usr/bin/env bash
# make demo: the seed walkthrough on embedded defaults, everything on
# loopback and free ports, as root (mounts an overlay):
#   1. a test KBS (sample TEE allowed) and a local docker-registry;
#   2. a busybox image built with umoci, pushed with skopeo;
#   3. the tenant encrypts it (`guestctl image encrypt`, KEK registered in the
#      KBS) and signs the encrypted image with cosign;
#   4. the policy and the cosign key go into the KBS;
#   5. `guestctl get-resource` and `guestctl attest` show the RCAR handshake;
#   6. `guestctl pull` attests, fetches policy, key and KEK from the KBS,
#      verifies, decrypts and unpacks into a mounted bundle; we run the
#      image's shell in it; an unsigned image is refused; `guestctl rm`.
# Usage: demo.sh BINDIR
set -euo pipefail
bin=$(cd "${1:-bin}" && pwd)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cosign=${GUESTD_COSIGN:-$root/.cache/bin/cosign}
work=$(mktemp -d)
pids=()
cleanup() {
	if mountpoint -q "$work/bundle/rootfs" 2>/dev/null; then
		"$bin/guestctl" rm --work-dir "$work/work" "$work/bundle" || umount -l "$work/bundle/rootfs" || true
	fi
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }
wait_file() { for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.05; done; echo "demo: $2 did not start" >&2; return 1; }

for tool in docker-registry skopeo umoci openssl /bin/busybox "$cosign"; do
	command -v "$tool" >/dev/null || { echo "demo: $tool is missing: run 'make deps' first" >&2; exit 1; }
done

step "1. test KBS and registry on loopback"
mkdir -p "$work/repo/default/demo" "$work/registry"
printf 'hello from the test KBS: sealed to the TEE key, opened inside the guest\n' >"$work/repo/default/demo/message"
openssl genpkey -algorithm ed25519 -out "$work/admin.key" 2>/dev/null
openssl pkey -in "$work/admin.key" -pubout -out "$work/admin.pub"
# The sample TEE proves nothing, so this policy releases resources to it
# explicitly (trustee's default policy would refuse it).
echo '{"default":"deny","rules":[{"tee":"sample","resource":"default/*/*","allow":true}]}' >"$work/kbs-policy.json"
"$bin/test-kbs" --listen 127.0.0.1:0 --repo "$work/repo" --policy "$work/kbs-policy.json" \
	--admin-pubkey "$work/admin.pub" --addr-file "$work/kbs.addr" 2>"$work/kbs.log" &
pids+=($!)
wait_file "$work/kbs.addr" "test KBS" || { cat "$work/kbs.log" >&2; exit 1; }
kbs="http://$(cat "$work/kbs.addr")"
# Port 0: the registry picks a free port and logs it.
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:0}
YAML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
pids+=($!)
reg=
for _ in $(seq 200); do
	reg=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$work/registry.log" | head -1 | sed 's/listening on //') && [ -n "$reg" ] && break
	sleep 0.05
done
[ -n "$reg" ] || { echo "demo: registry did not start" >&2; cat "$work/registry.log" >&2; exit 1; }
echo "KBS $kbs, registry $reg"

step "2. build a busybox image (umoci) and push it (skopeo)"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:demo"
umoci unpack --image "$work/oci:demo" "$work/build" >/dev/null
mkdir -p "$work/build/rootfs/bin" "$work/build/rootfs/etc"
cp /bin/busybox "$work/build/rootfs/bin/busybox"
for a in sh cat ls echo; do ln -s busybox "$work/build/rootfs/bin/$a"; done
echo 'this file came through an encrypted, signed image' >"$work/build/rootfs/etc/motd"
umoci repack --image "$work/oci:demo" "$work/build"
umoci config --image "$work/oci:demo" --config.cmd /bin/sh
skopeo copy -q --insecure-policy --dest-tls-verify=false "oci:$work/oci:demo" "docker://$reg/demo/app:plain"

step "3. tenant: encrypt (KEK registered in the KBS) and sign with cosign"
"$bin/guestctl" image encrypt --kbs "$kbs" --admin-key "$work/admin.key" --key-id kbs:///default/key/demo \
	--insecure "docker://$reg/demo/app:plain" "docker://$reg/demo/app:enc" 2>/dev/null
digest=$(skopeo inspect --tls-verify=false --format '{{.Digest}}' "docker://$reg/demo/app:enc")
(cd "$work" && COSIGN_PASSWORD= "$cosign" generate-key-pair >/dev/null 2>&1)
COSIGN_PASSWORD= "$cosign" sign --key "$work/cosign.key" --tlog-upload=false --allow-insecure-registry \
	--allow-http-registry --yes "$reg/demo/app@$digest" >/dev/null 2>&1
echo "encrypted image $reg/demo/app:enc@$digest, signed"

step "4. the image security policy and the cosign key go into the KBS"
mkdir -p "$work/repo/default/security-policy" "$work/repo/default/cosign-key"
cp "$work/cosign.pub" "$work/repo/default/cosign-key/demo"
cat >"$work/repo/default/security-policy/demo" <<'JSON'
{"default":[{"type":"reject"}],
 "transports":{"docker":{"":[{"type":"sigstoreSigned","keyPath":"kbs:///default/cosign-key/demo",
   "signedIdentity":{"type":"matchRepository"}}]}}}
JSON

step "5. guestctl get-resource --kbs $kbs --tee sample kbs:///default/demo/message"
"$bin/guestctl" get-resource --kbs "$kbs" --tee sample kbs:///default/demo/message
echo "guestctl attest: the token binds the TEE key:"
"$bin/guestctl" attest --kbs "$kbs" --tee sample | grep -A6 '"tee-pubkey"'

step "6. guestctl pull: attest, fetch policy + cosign key + KEK, verify, decrypt, unpack, mount"
mkdir -p "$work/bundle"
"$bin/guestctl" pull --no-progress --kbs "$kbs" --tee sample --policy kbs:///default/security-policy/demo --require-policy \
	--insecure-registry "$reg" --work-dir "$work/work" "$reg/demo/app:enc" "$work/bundle"
echo "bundle: $(ls "$work/bundle")"
echo "the image's own shell, in the bundle rootfs:"
chroot "$work/bundle/rootfs" /bin/sh -c 'cat /etc/motd'
echo "the unsigned image is refused:"
mkdir -p "$work/bundle2"
if "$bin/guestctl" pull --no-progress --kbs "$kbs" --tee sample --policy kbs:///default/security-policy/demo \
	--insecure-registry "$reg" --work-dir "$work/work2" "$reg/demo/app:plain" "$work/bundle2"; then
	echo "demo: the unsigned image was accepted" >&2
	exit 1
fi
"$bin/guestctl" rm --work-dir "$work/work" "$work/bundle"
step "done; stopping the KBS and the registry"
