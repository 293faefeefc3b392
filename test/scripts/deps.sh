#!/usr/bin/env bash
# Installs the Debian packages the tests need, if missing. Needs root (as CI
# and the README's fresh-machine instructions are).
set -euo pipefail
need=()
command -v swtpm >/dev/null 2>&1 || need+=(swtpm swtpm-tools)
if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]}; run as root or: apt-get install -y ${need[*]}" >&2
	exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
