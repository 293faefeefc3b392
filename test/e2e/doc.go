// Package e2e runs the seed walkthrough end to end inside a real QEMU
// guest (see package guest): guestd baked into the guest image, started by
// the guest's /init under kata's names in kata's order, attesting with the
// guest's TPM (swtpm) to the test KBS, pulling from a docker-registry on
// the host through the guest's only forwarded routes, and driven over vsock
// (through a test-only in-guest TCP bridge) the way a kata shim would.
//
// The tests carry the build tag e2e: `make e2e` builds the guest image and
// runs them, and `make test` includes `make e2e`. Scenarios (subtests of
// TestE2E): unencrypted, encrypted, refusals, securemount, restart,
// unified (one `guestd serve` process from the installed config instead of
// kata's three names), host.
package e2e
