// Package agent wires guestd together: it turns configuration (package
// config: kernel command line, AA/CDH TOML, initdata) into running parts —
// the attester, the KBC — and, as the daemon grows, the API servers on
// kata's sockets. cmd/guestd and cmd/guestctl build everything through it so
// both take the same paths.
package agent
