// Command guestd is the Confidential Containers guest agent: one binary that
// does inside the TEE what the attestation agent, the confidential data hub,
// image-rs and the REST API server do.
//
// This build has the attestation core: configuration (kernel command line,
// AA/CDH TOML, initdata) and TEE detection, checked by `guestd check`. The
// API servers on kata's sockets are the next milestone (see README.md);
// until then `guestctl` drives the same code from the command line.
//
//	guestd check [-c AA.toml] [--cdh-config CDH.toml] [--initdata-toml FILE] [--cmdline FILE] [--tee NAME]
package main
