// Package resource owns the KBS resource URI: its grammar, its canonical
// string form, and the two names derived from it, the offline lookup key
// ("repo/type/tag") and the KBS HTTP path ("/kbs/v0/<plugin>/...").
//
// Form: kbs[+<plugin>]://[<host[:port]>]/<seg>/<seg>...[?<query>]
//
// As upstream (guest-components attestation-agent/deps/resource_uri and
// docs/RESOURCE_URI.md), kbs:// and kbs+resource:// both name the
// "resource" plugin and serialise as kbs://, and the host is kept but never
// used to pick a KBS. This package is stricter than upstream's parser: every
// path segment and the plugin name must match trustee's resource-name rule
// ^[A-Za-z0-9_-][A-Za-z0-9_.-]*$, and the resource plugin takes exactly the
// three segments repo/type/tag that trustee's resource plugin accepts.
package resource
