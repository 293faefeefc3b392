package service

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker/reference"
	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
)

// The runtime measurement of a pulled image, as upstream's data hub
// records it (trustee's confidential-containers event spec).
const (
	PullImageDomain    = "github.com/confidential-containers"
	PullImageOperation = "PullImage"
)

// SecureMounter mounts secure volumes (upstream's SecureMount: encrypted
// block devices and the like).
type SecureMounter interface {
	SecureMount(ctx context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error
}

// Puller pulls images into bundles and removes them again;
// *imagepull.Puller is one.
type Puller interface {
	Pull(ctx context.Context, imageRef, bundle string) (digest.Digest, error)
	Remove(ctx context.Context, bundle string) error
}

// Measurer records runtime measurements. *AA is one, and so is an
// attestation agent ttRPC client (aapb.TTRPCAttestationAgentServiceService).
type Measurer interface {
	ExtendRuntimeMeasurement(ctx context.Context, req *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error)
}

// CDHConfig configures NewCDH. A nil part makes its method fail with a
// clear message instead of the service being absent.
type CDHConfig struct {
	// KBC fetches resources for GetResource; share the AA's KBS client so
	// that one attestation serves both. nil: FailedPrecondition.
	KBC kbc.Client
	// Unsealer serves UnsealSecret. nil: FailedPrecondition.
	Unsealer *sealed.Unsealer
	// Puller serves PullImage. nil: FailedPrecondition.
	Puller Puller
	// SecureMounter serves SecureMount. nil: Unimplemented.
	SecureMounter SecureMounter
	// Measurer, if set, records every pulled image as upstream's data hub
	// does: domain PullImageDomain, operation PullImageOperation, content
	// {"image":"<image_url>", "digest":"<manifest digest>"}. A failure to
	// record fails the pull (and unmounts the bundle); NOT_ENABLED and
	// NOT_SUPPORTED only log.
	Measurer Measurer
	// Logger receives one line per call; never secrets. Default: discard.
	Logger *slog.Logger
}

// CDH implements the confidential data hub's services (api.SealedSecretService,
// api.GetResourceService, api.SecureMountService, api.ImagePullService)
// for gRPC and ttRPC. It is safe for concurrent use; pulls run
// concurrently.
type CDH struct {
	cdhpb.UnimplementedSealedSecretServiceServer
	cdhpb.UnimplementedGetResourceServiceServer
	cdhpb.UnimplementedSecureMountServiceServer
	cdhpb.UnimplementedImagePullServiceServer

	cfg CDHConfig
	log *slog.Logger
}

var (
	_ cdhpb.SealedSecretServiceServer       = (*CDH)(nil)
	_ cdhpb.GetResourceServiceServer        = (*CDH)(nil)
	_ cdhpb.SecureMountServiceServer        = (*CDH)(nil)
	_ cdhpb.ImagePullServiceServer          = (*CDH)(nil)
	_ cdhpb.TTRPCSealedSecretServiceService = (*CDH)(nil)
	_ cdhpb.TTRPCGetResourceServiceService  = (*CDH)(nil)
	_ cdhpb.TTRPCSecureMountServiceService  = (*CDH)(nil)
	_ cdhpb.TTRPCImagePullServiceService    = (*CDH)(nil)
)

// NewCDH returns the data hub services for cfg.
func NewCDH(cfg CDHConfig) *CDH {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &CDH{cfg: cfg, log: log.With("service", "confidential-data-hub")}
}

// GetResource fetches the resource a full KBS resource URI
// (kbs:///<repo>/<type>/<tag>) names, through the KBC.
func (h *CDH) GetResource(ctx context.Context, req *cdhpb.GetResourceRequest) (*cdhpb.GetResourceResponse, error) {
	c := begin(ctx, h.log, "GetResource", req.GetResourcePath())
	data, err := h.resource(c, req.GetResourcePath())
	if err != nil {
		return nil, err
	}
	return &cdhpb.GetResourceResponse{Resource: data}, nil
}

func (h *CDH) resource(c *call, path string) ([]byte, error) {
	if path == "" {
		return nil, c.failf(codes.InvalidArgument, "empty resource path (want a kbs:///<repo>/<type>/<tag> URI)")
	}
	uri, err := resource.Parse(path)
	if err != nil {
		return nil, c.fail(err)
	}
	if h.cfg.KBC == nil {
		return nil, c.failf(codes.FailedPrecondition, "no KBC is configured (agent.aa_kbc_params, or [kbc] in the CDH config)")
	}
	data, err := h.cfg.KBC.GetResource(c.ctx, uri)
	if err != nil {
		return nil, c.fail(err)
	}
	c.ok("bytes", len(data))
	return data, nil
}

// UnsealSecret unseals a "sealed.<JWS>" secret.
func (h *CDH) UnsealSecret(ctx context.Context, req *cdhpb.UnsealSecretInput) (*cdhpb.UnsealSecretOutput, error) {
	c := begin(ctx, h.log, "UnsealSecret", "", "secret_bytes", len(req.GetSecret()))
	if h.cfg.Unsealer == nil {
		return nil, c.failf(codes.FailedPrecondition, "sealed secrets are not configured")
	}
	if len(req.GetSecret()) == 0 {
		return nil, c.failf(codes.InvalidArgument, "empty secret")
	}
	plain, err := h.cfg.Unsealer.Unseal(c.ctx, req.GetSecret())
	if err != nil {
		return nil, c.fail(err)
	}
	c.ok()
	return &cdhpb.UnsealSecretOutput{Plaintext: plain}, nil
}

// SecureMount delegates to the SecureMounter.
func (h *CDH) SecureMount(ctx context.Context, req *cdhpb.SecureMountRequest) (*cdhpb.SecureMountResponse, error) {
	c := begin(ctx, h.log, "SecureMount", req.GetVolumeType()+" "+req.GetMountPoint(),
		"volume_type", req.GetVolumeType(), "mount_point", req.GetMountPoint())
	if h.cfg.SecureMounter == nil {
		return nil, c.failf(codes.Unimplemented, "secure mounts (volume type %q) are not supported: guestd has no secure mounter configured", req.GetVolumeType())
	}
	if req.GetVolumeType() == "" {
		return nil, c.failf(codes.InvalidArgument, "empty volume_type")
	}
	if !cleanAbs(req.GetMountPoint()) {
		return nil, c.failf(codes.InvalidArgument, "mount_point %q is not a clean absolute path", req.GetMountPoint())
	}
	// Options may hold secrets (keys); they are neither logged nor echoed.
	if err := h.cfg.SecureMounter.SecureMount(c.ctx, req.GetVolumeType(), req.GetOptions(), req.GetFlags(), req.GetMountPoint()); err != nil {
		return nil, c.fail(err)
	}
	c.ok()
	return &cdhpb.SecureMountResponse{}, nil
}

// PullImage pulls image_url into bundle_path (bundle_path/rootfs mounted,
// bundle_path/config.json written) and answers the manifest digest. Pulls
// run concurrently; the Puller shares layers between them.
func (h *CDH) PullImage(ctx context.Context, req *cdhpb.ImagePullRequest) (*cdhpb.ImagePullResponse, error) {
	c := begin(ctx, h.log, "PullImage", req.GetImageUrl(), "bundle", req.GetBundlePath())
	d, err := h.pull(c, req.GetImageUrl(), req.GetBundlePath())
	if err != nil {
		return nil, err
	}
	return &cdhpb.ImagePullResponse{ManifestDigest: d}, nil
}

func (h *CDH) pull(c *call, image, bundle string) (string, error) {
	if image == "" {
		return "", c.failf(codes.InvalidArgument, "empty image_url")
	}
	if _, err := reference.ParseNormalizedNamed(image); err != nil {
		return "", c.failf(codes.InvalidArgument, "image_url: %v", err)
	}
	if !cleanAbs(bundle) {
		return "", c.failf(codes.InvalidArgument, "bundle_path %q is not a clean absolute path", bundle)
	}
	if h.cfg.Puller == nil {
		return "", c.failf(codes.FailedPrecondition, "image pull is not configured")
	}
	// The caller creates the bundle; image-rs creates it when it is
	// missing, and so does this.
	if err := os.MkdirAll(bundle, 0o700); err != nil {
		return "", c.failf(codes.InvalidArgument, "bundle_path: %v", err)
	}
	d, err := h.cfg.Puller.Pull(c.ctx, image, bundle)
	if err != nil {
		return "", c.fail(err)
	}
	if err := h.measurePull(c, image, d.String()); err != nil {
		if rerr := h.cfg.Puller.Remove(context.WithoutCancel(c.ctx), bundle); rerr != nil {
			c.log.Warn("could not remove the bundle of an unmeasured pull", "err", rerr)
		}
		return "", c.fail(err)
	}
	c.ok("digest", d.String())
	return d.String(), nil
}

// measurePull records the pull with the Measurer, if there is one.
func (h *CDH) measurePull(c *call, image, digest string) error {
	if h.cfg.Measurer == nil {
		return nil
	}
	img, err := json.Marshal(image)
	if err != nil {
		return err
	}
	// Upstream's exact layout, space included.
	content := fmt.Sprintf(`{"image":%s, "digest":%q}`, img, digest)
	res, err := h.cfg.Measurer.ExtendRuntimeMeasurement(c.ctx, &aapb.ExtendRuntimeMeasurementRequest{
		Domain: PullImageDomain, Operation: PullImageOperation, Content: content,
	})
	if err != nil {
		return fmt.Errorf("record the pull as a runtime measurement: %w", err)
	}
	switch r := res.GetResult(); r {
	case aapb.RuntimeMeasurementResult_OK:
		c.log.Debug("pull recorded as a runtime measurement")
	default:
		c.log.Warn("pull not recorded as a runtime measurement", "result", r.String())
	}
	return nil
}

// cleanAbs reports whether p is an absolute path other than "/" without
// "." or ".." elements.
func cleanAbs(p string) bool {
	if !filepath.IsAbs(p) || strings.Trim(p, "/") == "" {
		return false
	}
	return !slices.ContainsFunc(strings.Split(p, "/"), func(e string) bool { return e == "." || e == ".." })
}
