// Package kbc defines how guestd obtains confidential resources (keys,
// policies, credentials): from a KBS over the attested RCAR protocol
// (package kbs), from files baked into the guest image (package offline) or
// from secrets the host injected at launch into an SEV guest (package sev).
// Resource URIs are parsed by package resource.
package kbc
