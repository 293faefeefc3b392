#!/usr/bin/env bash
# Code generation for agent/api (the CoCo AA, CDH and keyprovider APIs).
#
#   proto-tools.sh          install the codegen tools if missing (a no-op,
#                           well under a second, when they are present)
#   proto-tools.sh gen [D]  install them, then regenerate the Go code under
#                           D (default: the repository root); `make proto`
#                           runs this, and agent/api's TestGeneratedCodeIsFresh
#                           runs it into a temp dir and compares the bytes.
#
# Tools: protoc from Debian's protobuf-compiler (3.21.12 on Debian 12; apt
# is used when it is missing and we are root), and three plugins pinned
# below, built with `go install` into .cache/bin (a few seconds each the
# first time). Their versions are read back with `go version -m`, so a stale
# or foreign binary gets rebuilt.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$root/.cache/bin
module=github.com/guestd/guestd

# plugin binary, module and version, one per line.
plugins=(
	"protoc-gen-go google.golang.org/protobuf v1.36.12 google.golang.org/protobuf/cmd/protoc-gen-go"
	"protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc v1.6.2 google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	"protoc-gen-go-ttrpc github.com/containerd/ttrpc v1.2.10 github.com/containerd/ttrpc/cmd/protoc-gen-go-ttrpc"
)

# have_plugin NAME MODULE VERSION: the binary in .cache/bin was built from
# MODULE@VERSION.
have_plugin() {
	[ -x "$bin/$1" ] || return 1
	go version -m "$bin/$1" 2>/dev/null | awk -v m="$2" -v v="$3" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

install_tools() {
	if ! command -v protoc >/dev/null 2>&1; then
		if [ "$(id -u)" -ne 0 ]; then
			echo "proto-tools: protoc missing; run as root or: apt-get install -y --no-install-recommends protobuf-compiler" >&2
			exit 1
		fi
		echo "proto-tools: installing protobuf-compiler"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends protobuf-compiler >/dev/null
	fi
	command -v go >/dev/null 2>&1 || { echo "proto-tools: go is needed to build the protoc plugins" >&2; exit 1; }
	local p name mod ver pkg missing=()
	for p in "${plugins[@]}"; do
		read -r name mod ver pkg <<<"$p"
		have_plugin "$name" "$mod" "$ver" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	mkdir -p "$bin"
	# `make proto` and the freshness test may run at the same time.
	exec 8>"$bin/.proto-tools.lock"
	flock 8
	local tmp
	tmp=$(mktemp -d "$bin/.build-XXXXXX")
	for p in "${missing[@]}"; do
		read -r name mod ver pkg <<<"$p"
		have_plugin "$name" "$mod" "$ver" && continue
		echo "proto-tools: go install $pkg@$ver into .cache/bin"
		# Outside the module, so go.mod is untouched; no project GOFLAGS.
		(cd "$tmp" && GOBIN=$tmp GOFLAGS=-buildvcs=false go install "$pkg@$ver")
		mv -f "$tmp/$name" "$bin/$name"
	done
	rm -rf "$tmp"
	exec 8>&-
}

# generate OUT: run protoc over agent/api/proto, writing the Go packages
# under OUT/agent/api. Files are named by their path from the repository
# root (e.g. agent/api/proto/attestation-agent.proto), which keeps their
# protobuf registry paths unique in the binary.
generate() {
	local out=$1
	mkdir -p "$out"
	cd "$root"
	local go_opts=(--plugin=protoc-gen-go="$bin/protoc-gen-go" --go_out="$out" --go_opt=module=$module)
	local grpc_opts=(--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" --go-grpc_out="$out" --go-grpc_opt=module=$module)
	local ttrpc_opts=(--plugin=protoc-gen-go-ttrpc="$bin/protoc-gen-go-ttrpc" --go-ttrpc_out="$out" --go-ttrpc_opt=module=$module,prefix=TTRPC)
	# AA and CDH: messages, gRPC and ttRPC stubs.
	protoc -I . "${go_opts[@]}" "${grpc_opts[@]}" "${ttrpc_opts[@]}" \
		agent/api/proto/attestation-agent.proto \
		agent/api/proto/confidential_data_hub.proto
	# keyprovider: ttRPC stubs only; messages and gRPC stubs are ocicrypt's
	# (see the keyproviderpb package doc).
	protoc -I . "${ttrpc_opts[@]}" agent/api/proto/keyprovider.proto
}

case ${1:-install} in
install) install_tools ;;
gen)
	install_tools
	out=${2:-$root}
	mkdir -p "$out"
	generate "$(cd "$out" && pwd)"
	;;
*)
	echo "usage: $0 [install | gen [OUTDIR]]" >&2
	exit 2
	;;
esac
