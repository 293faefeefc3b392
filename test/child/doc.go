// Package child runs the helper processes tests start (a registry, a TPM
// emulator): each is killed by the kernel if the test binary dies first,
// and is stopped by its own PID (SIGTERM, then SIGKILL after a grace
// period), never by name, since the machine is shared.
package child
