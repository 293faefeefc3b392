// Package guest boots the guestd guest image (test/guest/image, built by
// `make guest-image`) in QEMU for end-to-end tests, the way a kata VM runs
// it: TCG (this machine's /dev/kvm cannot boot a stock kernel), one
// restricted user-mode network whose only ways out are guestfwd entries to
// chosen host services, hostfwd entries bound to 127.0.0.1 on free ports,
// an optional swtpm as the guest's TPM and raw files as virtio disks.
//
// The guest's /init starts guestd under kata's names in kata's order and
// prints "GUESTD-E2E READY" on the serial console; the test-only
// guestprobe in the guest bridges TCP ports to guestd's vsock listeners and
// runs shell scripts for the harness (VM.Sh). Every process the harness
// starts (QEMU, swtpm) is stopped by PID when the test ends; the serial log
// is copied to the artifact directory when the test fails.
//
// guestfwd spawns a command per guest connection: the harness makes the
// test binary itself that command (RelayMain, called from TestMain), a
// stdin/stdout to TCP copier, so nothing else needs building.
package guest
