#!/usr/bin/env bash
# make demo: start the test KBS on a free loopback port with a sample
# resource, fetch it with guestctl through the full RCAR handshake (sample
# attester), print it, stop the KBS. Usage: demo.sh BINDIR
set -euo pipefail
bin=${1:-bin}
work=$(mktemp -d)
kbs_pid=
cleanup() {
	if [ -n "$kbs_pid" ]; then kill "$kbs_pid" 2>/dev/null || true; wait "$kbs_pid" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/repo/default/demo"
printf 'hello from the test KBS: sealed to the TEE key, opened inside the guest\n' >"$work/repo/default/demo/message"
# The sample TEE proves nothing, so this policy releases resources to it
# explicitly (trustee's default policy would refuse it).
cat >"$work/policy.json" <<'JSON'
{"default": "deny", "rules": [{"tee": "sample", "resource": "default/*/*", "allow": true}]}
JSON

"$bin/test-kbs" --listen 127.0.0.1:0 --repo "$work/repo" --policy "$work/policy.json" \
	--addr-file "$work/addr" 2>"$work/kbs.log" &
kbs_pid=$!
for _ in $(seq 100); do [ -s "$work/addr" ] && break; sleep 0.05; done
if [ ! -s "$work/addr" ]; then echo "demo: test KBS did not start:" >&2; cat "$work/kbs.log" >&2; exit 1; fi
url="http://$(cat "$work/addr")"

echo "== test KBS listening on $url (pid $kbs_pid)"
echo "== guestctl get-resource --kbs $url --tee sample kbs:///default/demo/message"
"$bin/guestctl" get-resource --kbs "$url" --tee sample kbs:///default/demo/message
echo "== guestctl attest: the attestation token's claims"
"$bin/guestctl" attest --kbs "$url" --tee sample
echo "== done; stopping the test KBS"
