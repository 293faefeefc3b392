// Package kbs is a test Key Broker Service: a Go server for KBS protocol
// 0.4.0 (RCAR) that behaves on the wire as trustee's KBS with its built-in
// attestation service does. guestd's KBS client is tested against it; it
// is usable as a library (Server is an http.Handler, see package kbstest)
// and as a binary.
//
// # Endpoints
//
//	POST   /kbs/v0/auth                      Request → Challenge + session cookie
//	POST   /kbs/v0/attest                    Attestation → {"token": EAR JWT} + cookie
//	GET    /kbs/v0/resource/<repo>/<type>/<tag>  → JWE sealed to the TEE key
//	POST   /kbs/v0/resource/<repo>/<type>/<tag>  admin: write (raw body)
//	DELETE /kbs/v0/resource/<repo>/<type>/<tag>  admin: delete
//	POST   /kbs/v0/resource-policy           admin: {"policy": base64url(policy JSON)}
//	GET    /kbs/v0/resource-policy           admin: the policy JSON in force
//	GET    /healthz                          200
//
// Resources are files <RepoDir>/<repo>/<type>/<tag>. Sessions and the token
// signing key (ephemeral ES256) live in the Server. The binding digest is
// protocol.ReportData under SHA-384, or Config.HashAlgorithm when set (the
// challenge then says {"selected-hash-algorithm": ...}); a Verifier per TEE
// checks the evidence against it. Attestation tokens are EAR JWTs laid out
// as trustee's (constants EAR*), with the TEE key at TeePubKeyPath; the KBS
// verifies them on every resource request (signature with its own key, exp
// with TokenLeeway), whether they come from the session cookie or an
// Authorization: Bearer header.
//
// # Resource policy
//
// The policy replaces trustee's Rego resource policy. It is a JSON document:
//
//	{
//	  "default": "deny",
//	  "rules": [
//	    {"tee": "sample", "resource": "default/*/*", "allow": true},
//	    {"tee": "tdx", "resource": "prod/key/*", "query": {"version": "v[12]"}, "allow": true},
//	    {"resource": "*/secret/*", "allow": false}
//	  ]
//	}
//
// Rules are tried in order and the first that matches decides with its
// "allow"; when none matches, "default" decides ("allow" or "deny"; absent
// means deny). A rule matches when each pattern it has matches: "tee" the
// TEE the token was issued for (the TEE named in
// submods.cpu0.ear.veraison.annotated-evidence), "resource" the path
// "<repo>/<type>/<tag>", and "query" every listed query parameter (which
// must be present). Patterns are path.Match globs ("*" does not cross "/");
// an absent pattern matches anything. "allow" is required in every rule;
// unknown members are errors. AllowAll is {"default":"allow"}; DenyAll,
// the default, is {"default":"deny"}.
//
// # Errors
//
// Every KBS error is ErrorInformation
// {"type":"https://github.com/confidential-containers/kbs/errors/<Variant>","detail":...}
// with trustee's variant and status: 404 for PluginNotFound (an unknown first
// path segment), 401 for everything else. The detail starts with trustee's
// text and, unlike trustee, goes on with the cause, so that tests can tell
// failures apart:
//
//	/auth, /attest failures         401 AttestationError  "Attestation error: RCAR handshake Auth|Attest failed: <cause>"
//	no token                        401 TokenNotFound     "Attestation Token not found"
//	bad or expired token            401 TokenVerifierError
//	policy denies                   401 PolicyDeny        "Access denied by policy"
//	missing resource, bad path,     401 PluginInternalError "Plugin internal error: resource not found: <path>"
//	  PUT, repository I/O
//	admin auth on resource writes   401 AdminAuthInitialization (trustee's #[from] quirk)
//	admin auth on resource-policy   401 AdminAuthAccess
//	bad policy document             401 ParsePolicyError
//	sealing failure                 401 JweError
//
// As in trustee, a malformed resource path is not a 404: it is checked after
// the token and the policy, by the resource plugin, and fails 401
// PluginInternalError (trustee's InvalidRequestPath cannot actually occur).
// Failures that happen before trustee's handler runs come from actix there
// and are mimicked: a body over MaxBodyBytes gets 413 with the plain-text
// "Payload reached size limit.", a path outside /kbs/v0/ 404 and a method
// other than GET, POST, PUT and DELETE 405, both with empty bodies, and a
// malformed query string 400.
package kbs
