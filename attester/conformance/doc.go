// Package conformance checks that an attester.Attester behaves as guestd
// expects of every TEE implementation. Each attester package's tests call
// Check with its fake or real hardware and a verifier for its evidence.
package conformance
