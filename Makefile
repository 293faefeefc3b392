# guestd — see README.md. Every target works on a fresh Debian 12 machine as
# root: `make deps` (run by test and demo) installs what they need.

GO        ?= go
BIN       ?= bin
# containers_image_openpgp keeps containers/image pure Go (no gpgme) once the
# image pipeline lands; harmless before.
TAGS      ?= containers_image_openpgp
GOFLAGS_BUILD := -trimpath -tags '$(TAGS)' -ldflags '-s -w'
PKGS      := ./...

.PHONY: all build test lint demo bench deps clean proto guest-image install e2e

all: build

build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/guestd ./cmd/guestd
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/guestctl ./cmd/guestctl
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN)/test-kbs ./test/kbs/cmd/test-kbs

# guest-image builds the e2e guest image the QEMU harness boots (test-only):
# bin/guest/{vmlinuz,initrd.gz,kernel-version,manifest.txt} from Debian's
# cloud kernel, busybox, guestd (make install), test/guest/cmd/guestprobe,
# crun, runc, cryptsetup; installs what it needs with apt-get if missing.
# See test/guest/image/build.sh.
guest-image: build
	@GO=$(GO) ./test/guest/image/build.sh $(BIN)

# e2e runs the seed walkthrough inside QEMU guests (test/e2e, build tag
# e2e): scenarios unencrypted, encrypted, refusals, securemount, restart,
# unified and host. The full log goes to $(BIN)/e2e.log; failed guests' serial
# consoles are kept in $(BIN)/e2e-artifacts.
e2e: deps guest-image
	@echo "make e2e: booting QEMU guests (TCG), log in $(BIN)/e2e.log"
	@rm -rf $(BIN)/e2e-artifacts
	@$(GO) test -count=1 -timeout 20m -v -tags '$(TAGS) e2e' ./test/e2e/ >$(BIN)/e2e.log 2>&1; rc=$$?; \
	grep -E '^\s*(=== RUN|--- (PASS|FAIL|SKIP)|PASS$$|FAIL|ok |.*TIMING|.*searched)' $(BIN)/e2e.log; \
	if [ $$rc -ne 0 ]; then echo "make e2e failed; last lines of $(BIN)/e2e.log:"; tail -n 80 $(BIN)/e2e.log; exit $$rc; fi

# deps installs what tests, benchmarks and the demo use (swtpm, the
# docker-registry, skopeo, umoci, gnupg, busybox-static; cosign v2 built into
# .cache/bin); it is a no-op when they are present. See test/scripts/deps.sh.
deps:
	@./test/scripts/deps.sh

test: deps lint build
	$(GO) test -race -count=1 -tags '$(TAGS)' $(PKGS)
	@./test/scripts/demo.sh $(BIN) >$(BIN)/demo.log 2>&1 || { cat $(BIN)/demo.log; echo "make demo failed"; exit 1; }
	@echo "make demo: ok (walkthrough in $(BIN)/demo.log)"
	@$(MAKE) --no-print-directory e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet -tags '$(TAGS)' $(PKGS)
	$(GO) vet -tags '$(TAGS) e2e' ./test/e2e/

demo: deps build
	@./test/scripts/demo.sh $(BIN)

bench: deps
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -tags '$(TAGS)' $(PKGS)

clean:
	rm -rf $(BIN)

# install puts guestd into a root file system, DESTDIR (empty: this one; a
# guest image's root to build an image): the static binary in
# $(PREFIX)/bin with kata's names (attestation-agent, confidential-data-hub,
# api-server-rest) as relative symlinks to it, the systemd unit and the
# default /etc/guestd/guestd.toml (replaced). It only copies files: no
# systemctl, nothing about the machine it runs on.
PREFIX    ?= /usr/local
install: build
	install -D -m 0755 $(BIN)/guestd $(DESTDIR)$(PREFIX)/bin/guestd
	for n in attestation-agent confidential-data-hub api-server-rest; do \
		ln -sfn guestd $(DESTDIR)$(PREFIX)/bin/$$n || exit 1; \
	done
	install -d -m 0755 $(DESTDIR)/usr/lib/systemd/system
	sed 's|@bindir@|$(PREFIX)/bin|g' dist/guestd.service.in >$(DESTDIR)/usr/lib/systemd/system/guestd.service
	chmod 0644 $(DESTDIR)/usr/lib/systemd/system/guestd.service
	install -D -m 0644 dist/guestd.toml $(DESTDIR)/etc/guestd/guestd.toml

# proto regenerates agent/api's Go code (protobuf messages, gRPC and ttRPC
# stubs) from agent/api/proto; it installs protoc (apt protobuf-compiler) and
# the pinned plugins (.cache/bin) if missing. Commit the result:
# agent/api's TestGeneratedCodeIsFresh fails while it is stale.
proto:
	@./test/scripts/proto-tools.sh gen
