// Package kbstest runs the test KBS (package kbs) inside Go tests: on a
// loopback port chosen by the kernel, over HTTP or over HTTPS with a fresh
// test CA, shut down when the test ends.
package kbstest
