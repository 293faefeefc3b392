// Package jcs serialises JSON values in the JSON Canonicalization Scheme of
// RFC 8785, the form the KBS protocol hashes to bind a nonce and a TEE key
// into hardware evidence.
package jcs
