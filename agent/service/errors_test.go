package service_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"

	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/securemount"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/offline"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
	"github.com/guestd/guestd/snapshot"
)

// TestClassify covers the mapping rules one by one, with the error shapes
// the components really return (the end-to-end tests cover them over the
// wire).
func TestClassify(t *testing.T) {
	info := func(variant, detail string) *protocol.ErrorInformation {
		return &protocol.ErrorInformation{Type: protocol.ErrorTypePrefix + variant, Detail: detail}
	}
	_, uriErr := resource.Parse("kbs:///only/two")
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	wrap := func(err error) error { return fmt.Errorf("outer: %w", fmt.Errorf("inner: %w", err)) }
	for _, tc := range []struct {
		name string
		err  error
		want codes.Code
	}{
		{"nil", nil, codes.OK},
		{"status", wrap(status.Error(codes.ResourceExhausted, "x")), codes.ResourceExhausted},
		{"service error", &service.Error{Code: codes.AlreadyExists, Op: "op", ID: "1", Err: errors.New("x")}, codes.AlreadyExists},
		{"canceled", wrap(context.Canceled), codes.Canceled},
		{"deadline", wrap(context.DeadlineExceeded), codes.DeadlineExceeded},
		{"kbs 404", wrap(&kbs.Error{Step: "get resource", Status: 404, Info: info("PluginNotFound", "Plugin foo not found")}), codes.NotFound},
		{"kbs policy deny", wrap(&kbs.Error{Step: "get resource", Status: 401, Info: info("PolicyDeny", "Access denied by policy")}), codes.PermissionDenied},
		{"kbs attest refused", wrap(&kbs.Error{Step: "attest", Status: 401, Info: info("AttestationError", "Attestation error: RCAR handshake Attest failed")}), codes.PermissionDenied},
		{"kbs missing (test KBS)", &kbs.Error{Status: 401, Info: info("PluginInternalError", "Plugin internal error: resource not found: a/b/c")}, codes.NotFound},
		{"kbs missing (trustee)", &kbs.Error{Status: 401, Info: info("PluginInternalError", "Plugin internal error: No such file or directory (os error 2)")}, codes.NotFound},
		{"kbs 503", &kbs.Error{Status: 503}, codes.Unavailable},
		{"kbs unreachable", &kbs.Error{Step: "auth", Err: fmt.Errorf("post: %w", refused)}, codes.Unavailable},
		{"kbs malformed answer", &kbs.Error{Step: "auth", Status: 200, Err: errors.New("malformed response")}, codes.Internal},
		{"kbs no nonce", &kbs.Error{Step: "auth", Err: errors.New("challenge has no nonce")}, codes.Internal},
		{"resource URI", wrap(uriErr), codes.InvalidArgument},
		{"policy requirement", wrap(signature.PolicyRequirementError("rejected")), codes.PermissionDenied},
		{"invalid signature", wrap(signature.InvalidSignatureError{}), codes.PermissionDenied},
		{"secure mount in use", wrap(fmt.Errorf("map: %w", securemount.ErrExists)), codes.AlreadyExists},
		{"secure mount bad option", wrap(fmt.Errorf("opt: %w", securemount.ErrInvalid)), codes.InvalidArgument},
		{"secure mount no device", wrap(fmt.Errorf("dev: %w", securemount.ErrNoDevice)), codes.NotFound},
		{"secure mount not LUKS2", wrap(fmt.Errorf("open: %w", securemount.ErrNotLUKS2)), codes.FailedPrecondition},
		{"registry credentials", wrap(docker.ErrUnauthorizedForCredentials{Err: errors.New("401")}), codes.PermissionDenied},
		{"manifest unknown", wrap(errcode.Error{Code: v2.ErrorCodeManifestUnknown}), codes.NotFound},
		{"registry denied", wrap(errcode.ErrorCodeDenied), codes.PermissionDenied},
		{"registry 429", wrap(docker.ErrTooManyRequests), codes.Unavailable},
		{"sealed malformed", wrap(sealed.ErrMalformed), codes.InvalidArgument},
		{"sealed unsupported", wrap(sealed.ErrUnsupported), codes.InvalidArgument},
		{"sealed verification", wrap(sealed.ErrVerification), codes.PermissionDenied},
		{"packet malformed", wrap(keyprovider.ErrMalformedPacket), codes.InvalidArgument},
		{"wrong KEK", wrap(keyprovider.ErrAuthentication), codes.PermissionDenied},
		{"no KBC", wrap(keyprovider.ErrNoKBC), codes.FailedPrecondition},
		{"AAEL event", wrap(eventlog.ErrInvalidEvent), codes.InvalidArgument},
		{"offline missing", wrap(offline.ErrNotFound), codes.NotFound},
		{"no layer key", wrap(decrypt.ErrNoKey), codes.FailedPrecondition},
		{"bundle mounted", wrap(snapshot.ErrExists), codes.AlreadyExists},
		{"connection refused", wrap(refused), codes.Unavailable},
		{"DNS", wrap(&net.DNSError{Err: "no such host", Name: "registry.invalid"}), codes.Unavailable},
		{"anything else", errors.New("disk full"), codes.Internal},
	} {
		if got := service.Classify(tc.err); got != tc.want {
			t.Errorf("%s: Classify(%v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestErrorStatus: an *Error is a status with its code and a message naming
// the operation, the cause and the request id, plain as Error() and in the
// status.
func TestErrorStatus(t *testing.T) {
	e := &service.Error{Code: codes.NotFound, Op: "GetResource kbs:///a/b/c", ID: "0123", Err: errors.New("resource not found")}
	const want = "GetResource kbs:///a/b/c: resource not found [request 0123]"
	if e.Error() != want {
		t.Errorf("Error() = %q", e.Error())
	}
	st, ok := status.FromError(fmt.Errorf("wrapped: %w", e))
	if !ok || st.Code() != codes.NotFound {
		t.Errorf("status %v, %v", st, ok)
	}
	if st := e.GRPCStatus(); st.Message() != want {
		t.Errorf("status message %q", st.Message())
	}
}
