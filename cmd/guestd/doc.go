// Command guestd is the Confidential Containers guest agent: one binary that
// does inside the TEE what the attestation agent, the confidential data hub,
// image-rs and the REST API server do.
//
//	guestd serve [-c AA.toml] [--cdh-config CDH.toml] [--initdata-toml FILE] [--tee NAME]
//	             [--attestation_sock unix:///…] [--cdh-sock unix:///…] [--grpc ADDR]… [--rest HOST:PORT]
//	guestd check [-c AA.toml] [--cdh-config CDH.toml] [--initdata-toml FILE] [--cmdline FILE] [--tee NAME]
//
// serve runs the attestation agent on its ttRPC socket, the data hub and
// the ocicrypt keyprovider on cdh.sock, optional gRPC listeners (unix, tcp,
// vsock) and the loopback REST API, all sharing one attester and one KBS
// client; initdata is bound to the TEE before anything is served. check
// loads the configuration the same way and prints it.
package main
