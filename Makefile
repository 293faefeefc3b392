# guestd — see README.md. Every target works on a fresh Debian 12 machine as
# root: `make deps` (run by test and demo) installs what they need.

GO        ?= go
BIN       ?= bin
# containers_image_openpgp keeps containers/image pure Go (no gpgme) once the
# image pipeline lands; harmless before.
TAGS      ?= containers_image_openpgp
GOFLAGS_BUILD := -trimpath -tags '$(TAGS)' -ldflags '-s -w'
PKGS      := ./...

.PHONY: all build test lint demo bench deps clean proto

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/guestd ./cmd/guestd
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/guestctl ./cmd/guestctl
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/test-kbs ./test/kbs/cmd/test-kbs

# deps installs what tests, benchmarks and the demo use (swtpm, the
# docker-registry, skopeo, umoci, gnupg, busybox-static; cosign v2 built into
# .cache/bin); it is a no-op when they are present. See test/scripts/deps.sh.
deps:
	@./test/scripts/deps.sh

test: deps lint build
	$(GO) test -race -count=1 -tags '$(TAGS)' $(PKGS)
	@./test/scripts/demo.sh $(BIN) >$(BIN)/demo.log 2>&1 || { cat $(BIN)/demo.log; echo "make demo failed"; exit 1; }
	@echo "make demo: ok (walkthrough in $(BIN)/demo.log)"

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags '$(TAGS)' $(PKGS)

demo: deps build
	@./test/scripts/demo.sh $(BIN)

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -tags '$(TAGS)' $(PKGS)

clean:
	rm -rf $(BIN)

# proto regenerates agent/api's Go code (protobuf messages, gRPC and ttRPC
# stubs) from agent/api/proto; it installs protoc (apt protobuf-compiler) and
# the pinned plugins (.cache/bin) if missing. Commit the result:
# agent/api's TestGeneratedCodeIsFresh fails while it is stale.
proto:
	@./test/scripts/proto-tools.sh gen
