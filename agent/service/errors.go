package service

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/signature"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/securemount"
	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/offline"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
	"github.com/guestd/guestd/kbc/sev"
	"github.com/guestd/guestd/snapshot"
)

// Error is what every method of the services returns on failure. It is a
// gRPC status error (ttRPC carries the same status type): Code is the
// status code, and the message, Error(), names the operation, the cause
// (with the KBS's or registry's own detail, the policy requirement, the
// layer digest) and the request id the call was logged under.
type Error struct {
	Code codes.Code
	// Op is the failing operation and its subject, e.g.
	// "GetResource kbs:///default/key/1".
	Op string
	// ID is the request id of the call.
	ID string
	// Err is the cause.
	Err error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s: %v [request %s]", e.Op, e.Err, e.ID)
}

func (e *Error) Unwrap() error { return e.Err }

// GRPCStatus makes the error a status for gRPC and ttRPC.
func (e *Error) GRPCStatus() *status.Status { return status.New(e.Code, e.Error()) }

// Classify returns the gRPC status code for an error of the components the
// services call. The rules, first match wins:
//
//   - a status error keeps its code (Unknown excepted);
//   - context cancellation and deadline: Canceled, DeadlineExceeded;
//   - a KBS protocol error (*kbs.Error): HTTP 404, or a 401/403 whose
//     detail says the resource does not exist (trustee reports a missing
//     resource as 401 PluginInternalError), NotFound; any other 401/403
//     (policy denial, refused evidence, bad token) PermissionDenied; no
//     answer (network, TLS) or a 5xx, Unavailable;
//   - the request was malformed: a bad resource URI, a malformed sealed
//     secret or annotation packet, something unsupported named in it, an
//     invalid AAEL event or image reference: InvalidArgument;
//   - a secret or layer key that does not verify or decrypt under its key
//     (sealed.ErrVerification, keyprovider.ErrAuthentication), an image the
//     security policy rejects, a registry refusing the credentials:
//     PermissionDenied;
//   - a resource an offline or SEV KBC does not hold, a manifest, repository
//     or blob the registry does not know: NotFound;
//   - no KBC to fetch with, no usable key for an encrypted layer:
//     FailedPrecondition;
//   - a bundle that is already mounted: AlreadyExists;
//   - a registry or KBS that cannot be reached (connection refused or
//     reset, DNS, TLS verification, HTTP 429): Unavailable;
//   - anything else: Internal.
func Classify(err error) codes.Code {
	if err == nil {
		return codes.OK
	}
	if s, ok := errors.AsType[interface {
		error
		GRPCStatus() *status.Status
	}](err); ok {
		if st := s.GRPCStatus(); st != nil && st.Code() != codes.Unknown {
			return st.Code()
		}
	}
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	if ke, ok := errors.AsType[*kbs.Error](err); ok {
		return kbsCode(ke)
	}
	if _, ok := errors.AsType[*resource.Error](err); ok {
		return codes.InvalidArgument
	}
	if _, ok := errors.AsType[signature.PolicyRequirementError](err); ok {
		return codes.PermissionDenied
	}
	// A signature that does not verify is the policy refusing the image,
	// like a missing one.
	if _, ok := errors.AsType[signature.InvalidSignatureError](err); ok {
		return codes.PermissionDenied
	}
	if _, ok := errors.AsType[docker.ErrUnauthorizedForCredentials](err); ok {
		return codes.PermissionDenied
	}
	if ec, ok := errors.AsType[interface {
		error
		errcode.ErrorCoder
	}](err); ok {
		switch ec.ErrorCode().Descriptor().Value {
		case "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "BLOB_UNKNOWN":
			return codes.NotFound
		case "UNAUTHORIZED", "DENIED":
			return codes.PermissionDenied
		case "TOOMANYREQUESTS":
			return codes.Unavailable
		}
	}
	switch {
	case errors.Is(err, sealed.ErrMalformed), errors.Is(err, sealed.ErrUnsupported),
		errors.Is(err, keyprovider.ErrMalformedPacket), errors.Is(err, keyprovider.ErrUnsupported),
		errors.Is(err, eventlog.ErrInvalidEvent):
		return codes.InvalidArgument
	case errors.Is(err, sealed.ErrVerification), errors.Is(err, keyprovider.ErrAuthentication):
		return codes.PermissionDenied
	case errors.Is(err, offline.ErrNotFound), errors.Is(err, sev.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, keyprovider.ErrNoKBC), errors.Is(err, decrypt.ErrNoKey):
		return codes.FailedPrecondition
	case errors.Is(err, snapshot.ErrExists), errors.Is(err, securemount.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, securemount.ErrInvalid), errors.Is(err, securemount.ErrUnsupported):
		return codes.InvalidArgument
	case errors.Is(err, securemount.ErrNoDevice):
		return codes.NotFound
	case errors.Is(err, securemount.ErrNotLUKS2), errors.Is(err, securemount.ErrNoKeySource):
		return codes.FailedPrecondition
	case errors.Is(err, docker.ErrTooManyRequests), unreachable(err):
		return codes.Unavailable
	}
	return codes.Internal
}

// kbsCode maps a failed KBS protocol step.
func kbsCode(e *kbs.Error) codes.Code {
	switch {
	case e.Status == http.StatusNotFound:
		return codes.NotFound
	case e.Status == http.StatusUnauthorized || e.Status == http.StatusForbidden:
		if e.Info != nil && missingResource(e.Info.Detail) {
			return codes.NotFound
		}
		return codes.PermissionDenied
	case e.Status == http.StatusTooManyRequests, e.Status >= 500:
		return codes.Unavailable
	case e.Status == 0 && unreachable(e.Err):
		return codes.Unavailable
	}
	return codes.Internal
}

// missingResource recognises the detail trustee's resource plugin (and the
// test KBS) give for a resource that does not exist.
func missingResource(detail string) bool {
	d := strings.ToLower(detail)
	return strings.Contains(d, "not found") || strings.Contains(d, "no such file")
}

// unreachable reports whether err is a failure to reach a server: a
// network error, or a TLS certificate the client refused.
func unreachable(err error) bool {
	if err == nil {
		return false
	}
	if _, ok := errors.AsType[*net.OpError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*net.DNSError](err); ok {
		return true
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return true
	}
	if _, ok := errors.AsType[x509.HostnameError](err); ok {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.ETIMEDOUT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}
