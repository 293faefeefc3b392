// Package registry runs a real OCI distribution registry for tests.
//
// Start launches Debian's docker-registry (distribution 2.8, package
// docker-registry) as a child process on a free loopback port, with its
// storage in a test temp dir, optionally behind TLS (a throwaway CA made in
// Go) and htpasswd basic auth (bcrypt) or bearer tokens from an in-process
// Docker token server (TokenServer, the Docker Hub/quay/ghcr flow), and
// stops it by PID when the test ends. Corrupting and Substituting put a tampering reverse proxy in front of
// a registry, to prove that a puller checks digests.
//
// A Registry or a Proxy is a Target: an Endpoint that says how clients reach
// it (host, CA, cert dir for skopeo, credentials, auth.json). Tests need the
// docker-registry binary (apt-get install docker-registry); without it they
// fail, never skip.
package registry
