package kbs

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"

	"github.com/guestd/guestd/kbc/protocol"
)

// The error variants this KBS sends, named as trustee's kbs::Error enum
// names them. Each comes out as ErrorInformation whose type is
// protocol.ErrorTypePrefix followed by the variant.
const (
	VariantAdminAuthInitialization = "AdminAuthInitialization"
	VariantAdminAuthAccess         = "AdminAuthAccess"
	VariantAttestationError        = "AttestationError"
	VariantJweError                = "JweError"
	VariantPluginNotFound          = "PluginNotFound"
	VariantPluginInternalError     = "PluginInternalError"
	VariantPolicyDeny              = "PolicyDeny"
	VariantParsePolicyError        = "ParsePolicyError"
	VariantTokenNotFound           = "TokenNotFound"
	VariantTokenVerifierError      = "TokenVerifierError"
)

// kbsError is an error answered to the client. Its detail starts with the
// Display text trustee uses for the variant; where trustee stops there (its
// attest failures, for one, are opaque), ours goes on with the cause, so
// that tests can tell failures apart.
type kbsError struct {
	status  int
	variant string
	detail  string
}

func (e *kbsError) Error() string { return e.variant + ": " + e.detail }

func newError(status int, variant, format string, args ...any) *kbsError {
	return &kbsError{status: status, variant: variant, detail: fmt.Sprintf(format, args...)}
}

// withCause appends ": cause" to a trustee detail, when there is a cause.
func withCause(detail string, cause error) string {
	if cause == nil {
		return detail
	}
	return detail + ": " + cause.Error()
}

func errAuth(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantAttestationError, "%s",
		withCause("Attestation error: RCAR handshake Auth failed", cause))
}

func errAttest(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantAttestationError, "%s",
		withCause("Attestation error: RCAR handshake Attest failed", cause))
}

func errTokenNotFound() *kbsError {
	return newError(http.StatusUnauthorized, VariantTokenNotFound, "Attestation Token not found")
}

func errTokenVerifier(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantTokenVerifierError, "%s", withCause("Token Verifier error", cause))
}

func errPolicyDeny() *kbsError {
	return newError(http.StatusUnauthorized, VariantPolicyDeny, "Access denied by policy")
}

func errPluginNotFound(name string) *kbsError {
	return newError(http.StatusNotFound, VariantPluginNotFound, "Plugin %s not found", name)
}

func errPluginInternal(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantPluginInternalError, "%s", withCause("Plugin internal error", cause))
}

func errJwe(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantJweError, "%s", withCause("JWE failed", cause))
}

// errAdminPlugin is how trustee reports an admin failure on a plugin write
// (POST/DELETE resource): through the #[from] conversion, which names the
// AdminAuthInitialization variant.
func errAdminPlugin(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantAdminAuthInitialization, "%s",
		withCause("failed to initialize [admin] configuration", cause))
}

// errAdminEndpoint is an admin failure on a built-in admin endpoint.
func errAdminEndpoint(endpoint string, cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantAdminAuthAccess, "admin access denied for endpoint %s: %v", endpoint, cause)
}

func errParsePolicy(cause error) *kbsError {
	return newError(http.StatusUnauthorized, VariantParsePolicyError, "Failed to parse policy: %v", cause)
}

// body returns the ErrorInformation JSON, serialised as serde does (no HTML
// escaping, no trailing newline).
func (e *kbsError) body() []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// Encoding two strings cannot fail.
	_ = enc.Encode(protocol.ErrorInformation{Type: protocol.ErrorTypePrefix + e.variant, Detail: e.detail})
	return bytes.TrimRight(buf.Bytes(), "\n")
}

// write answers the error. trustee sets no Content-Type on error bodies;
// neither do we (a nil header value stops net/http from sniffing one).
func (e *kbsError) write(w http.ResponseWriter) {
	w.Header()["Content-Type"] = nil
	w.WriteHeader(e.status)
	_, _ = w.Write(e.body())
}

// denied is the reason text of an admin refusal, as trustee's
// admin::Error::AdminAccessDenied displays it.
func denied(format string, args ...any) error {
	return fmt.Errorf("Admin access denied: %s", strings.TrimSpace(fmt.Sprintf(format, args...)))
}
