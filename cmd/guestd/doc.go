// Command guestd is the Confidential Containers guest agent: one binary that
// does inside the TEE what the attestation agent, the confidential data hub,
// image-rs and the REST API server do.
//
//	guestd serve [--config FILE] [-c AA.toml] [--cdh-config CDH.toml] [--initdata-toml FILE] [--tee NAME]
//	             [--attestation_sock unix:///…] [--cdh-sock unix:///…] [--grpc ADDR]… [--rest HOST:PORT]
//	guestd check [the same flags]
//
// serve runs the attestation agent on its ttRPC socket, the data hub and
// the ocicrypt keyprovider on cdh.sock, optional gRPC listeners (unix, tcp,
// vsock) and the loopback REST API, all sharing one attester and one KBS
// client; initdata is bound to the TEE before anything is served. check
// loads the configuration the same way and prints it.
//
// Both read guestd's config file, /etc/guestd/guestd.toml or --config FILE
// (see config.Guestd): serve's settings plus upstream's AA and CDH config
// files as the tables [attestation_agent] and [confidential_data_hub].
// Flags win over the file; -c and --cdh-config replace a table whole, and
// so do initdata's aa.toml and cdh.toml.
//
// Under kata's names (attestation-agent, confidential-data-hub,
// api-server-rest, symlinks to guestd) the binary takes upstream's flags
// and serves that part only; GUESTD_TEE overrides TEE detection and
// GUESTD_GRPC (comma-separated listen addresses) adds gRPC listeners to the
// first two, kata's flags being fixed.
//
// The image puller opens its work dir at the first PullImage, so that kata
// can SecureMount a disk there first. On SIGTERM guestd cancels the calls
// in progress, waits for cancelled pulls to clean up (no mount, no half
// layer left), closes the secure mounter, removes its sockets and exits 0.
// With NOTIFY_SOCKET set it tells systemd READY=1 and STOPPING=1.
package main
