package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/api/keyproviderpb"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/resource"
)

// KeyProviderConfig configures NewKeyProvider.
type KeyProviderConfig struct {
	// KBC fetches the key-encryption keys; share the AA's KBS client. nil:
	// UnWrapKey fails with FailedPrecondition.
	KBC kbc.Client
	// Logger receives one line per call; never key material. Default:
	// discard.
	Logger *slog.Logger
}

// KeyProvider implements ocicrypt's keyprovider.KeyProviderService for the
// attestation-agent key provider in the guest, for gRPC and ttRPC:
// UnWrapKey unwraps a layer key with the KEK the annotation packet names
// (kbc/keyprovider's Unwrapper and protocol), WrapKey is not supported. It
// is safe for concurrent use.
type KeyProvider struct {
	keyproviderpb.UnimplementedKeyProviderServiceServer

	cfg KeyProviderConfig
	srv *keyprovider.Server
	log *slog.Logger
}

var (
	_ keyproviderpb.KeyProviderServiceServer       = (*KeyProvider)(nil)
	_ keyproviderpb.TTRPCKeyProviderServiceService = (*KeyProvider)(nil)
)

// NewKeyProvider returns the key provider service for cfg.
func NewKeyProvider(cfg KeyProviderConfig) *KeyProvider {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	kp := &KeyProvider{cfg: cfg, log: log.With("service", "keyprovider")}
	if cfg.KBC != nil {
		kp.srv = keyprovider.NewServer(keyprovider.ServerConfig{
			Unwrapper: &keyprovider.Unwrapper{KBC: recordingKBC{cfg.KBC}},
		})
	}
	return kp
}

// UnWrapKey answers {"keyunwrapresults":{"optsdata":"<b64>"}}, the private
// layer-cipher options the annotation packet wraps.
func (k *KeyProvider) UnWrapKey(ctx context.Context, in *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	c := begin(ctx, k.log, "UnWrapKey", "")
	if k.srv == nil {
		return nil, c.failf(codes.FailedPrecondition, "no KBC is configured to fetch key-encryption keys with")
	}
	// The KBC's own error, if the fetch of the KEK failed, says more than
	// the protocol server's code does (a missing KEK, a policy denial, an
	// unreachable KBS).
	rec := &kbcFailure{}
	out, err := k.srv.UnWrapKey(context.WithValue(c.ctx, kbcFailureKey{}, rec), in)
	if err != nil {
		st := status.Convert(err)
		code := st.Code()
		if kerr := rec.get(); kerr != nil {
			code = Classify(kerr)
		}
		return nil, c.failCode(code, errors.New(st.Message()))
	}
	c.ok()
	return out, nil
}

// WrapKey is not supported: layer keys are wrapped by the image's owner
// (guestctl image encrypt, upstream's coco_keyprovider), never in the
// guest.
func (k *KeyProvider) WrapKey(ctx context.Context, _ *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	c := begin(ctx, k.log, "WrapKey", "")
	return nil, c.failf(codes.Unimplemented, "wrapping layer keys is not supported in the guest: encrypt images outside it (guestctl image encrypt, or coco_keyprovider with skopeo)")
}

// kbcFailureKey is the context key of a call's *kbcFailure.
type kbcFailureKey struct{}

// kbcFailure holds the KBC error of one UnWrapKey call.
type kbcFailure struct {
	mu  sync.Mutex
	err error
}

func (f *kbcFailure) set(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

func (f *kbcFailure) get() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// recordingKBC passes fetches through and records a failure in the call's
// kbcFailure.
type recordingKBC struct{ kbc kbc.Client }

func (r recordingKBC) GetResource(ctx context.Context, uri resource.URI) ([]byte, error) {
	data, err := r.kbc.GetResource(ctx, uri)
	if err != nil {
		if f, ok := ctx.Value(kbcFailureKey{}).(*kbcFailure); ok {
			f.set(err)
		}
	}
	return data, err
}
