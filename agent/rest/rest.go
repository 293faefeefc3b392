package rest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Attestation is what the attestation routes need from the attestation
// agent.
type Attestation interface {
	// Evidence returns the primary attester's evidence for runtimeData.
	Evidence(ctx context.Context, runtimeData []byte) ([]byte, error)
	// AdditionalEvidence returns the evidence of the additional (device)
	// attesters for runtimeData.
	AdditionalEvidence(ctx context.Context, runtimeData []byte) ([]byte, error)
	// Token returns a token of tokenType. The result is either the token
	// itself or a JSON object carrying it in a "token" string field, as
	// upstream's agent answers; every other field of such an object is
	// dropped and never reaches the client.
	Token(ctx context.Context, tokenType string) ([]byte, error)
	// ExtendRuntimeMeasurement records an event; register nil means the
	// agent's default register. It returns an error matching
	// ErrMeasurementNotEnabled or ErrMeasurementNotSupported (errors.Is)
	// for those two outcomes.
	ExtendRuntimeMeasurement(ctx context.Context, domain, operation, content string, register *uint64) error
	// TeeType names the primary TEE, e.g. "tdx".
	TeeType() string
	// AdditionalTees names the additional TEEs, if any.
	AdditionalTees() []string
}

// Resources is what the resource route needs from the data hub.
type Resources interface {
	// GetResource returns the resource a URI such as kbs:///repo/type/tag
	// names.
	GetResource(ctx context.Context, uri string) ([]byte, error)
}

// Sentinel errors for ExtendRuntimeMeasurement, matching the agent's
// NOT_ENABLED and NOT_SUPPORTED results.
var (
	// ErrMeasurementNotEnabled: event log recording is switched off.
	ErrMeasurementNotEnabled = errors.New("runtime measurement is not enabled")
	// ErrMeasurementNotSupported: the platform cannot extend a runtime
	// measurement register.
	ErrMeasurementNotSupported = errors.New("runtime measurement is not supported on this platform")
)

// Feature values for Config.Features, as upstream's --features.
const (
	FeatureResource    = "resource"
	FeatureAttestation = "attestation"
	FeatureAll         = "all"
)

// MaxBodyBytes bounds a request body (only POST /aa/aael reads one).
const MaxBodyBytes = 64 << 10

// shutdownGrace is how long Serve lets in-flight requests finish.
const shutdownGrace = 5 * time.Second

// Config configures New.
type Config struct {
	// Features selects the routes: FeatureResource (the default when
	// empty), FeatureAttestation or FeatureAll.
	Features string
	// Version is reported by GET /info.
	Version string
}

// New returns the API handler. Attestation may be nil when the attestation
// feature is off, Resources when the resource feature is off; logger nil
// discards logs.
func New(cfg Config, aa Attestation, res Resources, logger *slog.Logger) (http.Handler, error) {
	feature := cfg.Features
	if feature == "" {
		feature = FeatureResource
	}
	var wantAA, wantRes bool
	switch feature {
	case FeatureResource:
		wantRes = true
	case FeatureAttestation:
		wantAA = true
	case FeatureAll:
		wantAA, wantRes = true, true
	default:
		return nil, fmt.Errorf("rest: unknown features %q (want %s, %s or %s)",
			cfg.Features, FeatureResource, FeatureAttestation, FeatureAll)
	}
	if wantAA && aa == nil {
		return nil, fmt.Errorf("rest: features %q need an attestation agent", feature)
	}
	if wantRes && res == nil {
		return nil, fmt.Errorf("rest: features %q need a resource provider", feature)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	h := &handler{version: cfg.Version, feature: feature, log: logger}
	if wantAA {
		h.aa = aa
	}
	if wantRes {
		h.res = res
	}
	return h, nil
}

// Serve serves h on ln until ctx is cancelled, then shuts down gracefully:
// it stops accepting, lets in-flight requests finish for a few seconds, and
// then closes what is left. Serve closes ln. It returns nil after a clean
// shutdown, otherwise the error that ended serving.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	if ln == nil || h == nil {
		return errors.New("rest: serve needs a listener and a handler")
	}
	// Requests do not inherit ctx's cancellation, so that cancelling ctx
	// drains instead of aborting them; base is cancelled once the grace
	// period is over.
	base, cancelBase := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBase()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return base },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	select {
	case err := <-done:
		return fmt.Errorf("rest: serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		cancelBase()
		_ = srv.Close()
	}
	<-done
	if err != nil {
		return fmt.Errorf("rest: shutdown: %w", err)
	}
	return nil
}
