package encrypt

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/containers/ocicrypt"
	encconfig "github.com/containers/ocicrypt/config"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/directory"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/image"
	ociarchive "go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/resource"
)

// Options configures Encrypt.
type Options struct {
	// KBSURL is the KBS the KEK is registered with (--kbs).
	KBSURL string
	// AdminKey signs the admin token (--admin-key; see ParseAdminKey).
	AdminKey ed25519.PrivateKey
	// KBSCertPEM adds root CAs for an https KBS.
	KBSCertPEM []byte
	// Registrar, if set, registers the KEK instead of an admin client
	// built from KBSURL and AdminKey.
	Registrar keyprovider.Registrar
	// KeyID names the KEK (--key-id): kbs:///<repo>/<type>/<tag>.
	KeyID string
	// Algorithm wraps the layer keys: keyprovider.A256GCM (default) or
	// keyprovider.A256CTR.
	Algorithm string
	// Insecure lets docker:// references use registries over plain HTTP or
	// with unverified TLS (loopback test registries).
	Insecure bool
	// SystemContext is the base containers/image configuration for both
	// ends (copied, never modified); nil: defaults.
	SystemContext *types.SystemContext
	// ReportWriter receives containers/image's progress lines; nil: none.
	ReportWriter io.Writer
}

var registerOnce sync.Once

// Register registers a stateless keyprovider.Wrapper with ocicrypt as
// "provider.attestation-agent", once per process. Encrypt calls it; call
// it at start-up if other goroutines use ocicrypt (see the package doc).
func Register() {
	registerOnce.Do(func() {
		ocicrypt.RegisterKeyWrapper(keyprovider.Scheme, &keyprovider.Wrapper{})
	})
}

// transports are the reference syntaxes Encrypt accepts, as
// containers/image spells them: oci:DIR[:TAG], docker://HOST/REPO:TAG,
// dir:DIR, oci-archive:FILE[:TAG].
var transports = map[string]types.ImageTransport{
	"oci":         layout.Transport,
	"docker":      docker.Transport,
	"dir":         directory.Transport,
	"oci-archive": ociarchive.Transport,
}

// ParseReference parses an image reference in containers/image transport
// syntax (see transports).
func ParseReference(ref string) (types.ImageReference, error) {
	name, within, ok := strings.Cut(ref, ":")
	if !ok {
		return nil, fmt.Errorf("image reference %q: want TRANSPORT:REFERENCE (oci:DIR:TAG, docker://HOST/REPO:TAG, dir:DIR, oci-archive:FILE:TAG)", ref)
	}
	t, ok := transports[name]
	if !ok {
		return nil, fmt.Errorf("image reference %q: transport %q is not supported (oci, docker, dir, oci-archive)", ref, name)
	}
	r, err := t.ParseReference(within)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w", ref, err)
	}
	return r, nil
}

// ParseAdminKey parses an Ed25519 admin private key: PEM "PRIVATE KEY"
// (PKCS#8, what `openssl genpkey -algorithm ed25519` writes).
func ParseAdminKey(pemData []byte) (ed25519.PrivateKey, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New("admin key: not a PEM PRIVATE KEY block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	clear(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("admin key: %w", err)
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("admin key: a %T, want Ed25519", k)
	}
	return ek, nil
}

// Encrypt copies src to dst (containers/image references, see
// ParseReference) encrypting every layer under a fresh KEK that it first
// registers in the KBS under opts.KeyID. It fails, writing nothing, if the
// source cannot be read, has no layers or has encrypted ones, or if the
// KBS refuses the KEK, or a registry destination does not answer with
// push access. A failure after the registration (a push that breaks
// midway) leaves the new KEK registered: under an existing key id it has
// replaced the old one (see the package doc).
func Encrypt(ctx context.Context, src, dst string, opts Options) error {
	if opts.KeyID == "" {
		return errors.New("encrypt image: no key id")
	}
	kid, err := parseKeyID(opts.KeyID)
	if err != nil {
		return fmt.Errorf("encrypt image: key id: %w", err)
	}
	switch opts.Algorithm {
	case "", keyprovider.A256GCM, keyprovider.A256CTR:
	default:
		return fmt.Errorf("encrypt image: algorithm %q is not %s or %s", opts.Algorithm, keyprovider.A256GCM, keyprovider.A256CTR)
	}
	reg := opts.Registrar
	if reg == nil {
		if opts.KBSURL == "" || opts.AdminKey == nil {
			return errors.New("encrypt image: no KBS URL and admin key to register the KEK with")
		}
		if reg, err = kbs.NewAdmin(opts.KBSURL, opts.AdminKey, opts.KBSCertPEM); err != nil {
			return fmt.Errorf("encrypt image: %w", err)
		}
	}
	srcRef, err := ParseReference(src)
	if err != nil {
		return fmt.Errorf("encrypt image: source: %w", err)
	}
	dstRef, err := ParseReference(dst)
	if err != nil {
		return fmt.Errorf("encrypt image: destination: %w", err)
	}
	sys := systemContext(opts)
	if err := checkSource(ctx, sys, srcRef); err != nil {
		return fmt.Errorf("encrypt image: source %s: %w", src, err)
	}
	if err := checkDestination(ctx, sys, dstRef); err != nil {
		return fmt.Errorf("encrypt image: destination %s: %w", dst, err)
	}

	kek := make([]byte, keyprovider.KEKSize)
	defer clear(kek)
	if _, err := rand.Read(kek); err != nil {
		return fmt.Errorf("encrypt image: generate KEK: %w", err)
	}
	if err := reg.SetResource(ctx, kid, kek); err != nil {
		return fmt.Errorf("encrypt image: register KEK %s: %w", kid, err)
	}

	Register()
	policy, err := signature.NewPolicyContext(&signature.Policy{
		// The tenant encrypts its own image: the source is trusted as is.
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		return fmt.Errorf("encrypt image: %w", err)
	}
	defer func() { _ = policy.Destroy() }()
	_, err = copy.Image(ctx, policy, dstRef, srcRef, &copy.Options{
		SourceCtx:             sys,
		DestinationCtx:        sys,
		ReportWriter:          opts.ReportWriter,
		RemoveSignatures:      true,
		ForceManifestMIMEType: ocispec.MediaTypeImageManifest,
		OciEncryptConfig:      &encconfig.EncryptConfig{Parameters: keyprovider.EncryptParameters(kek, kid.String(), opts.Algorithm)},
		OciEncryptLayers:      &[]int{}, // all layers
	})
	if err != nil {
		return fmt.Errorf("encrypt image %s to %s: %w", src, dst, err)
	}
	return nil
}

// parseKeyID accepts kbs:// resource URIs and /repo/type/tag.
func parseKeyID(s string) (resource.URI, error) {
	if strings.HasPrefix(s, "/") {
		return resource.FromPath(s)
	}
	u, err := resource.Parse(s)
	if err != nil {
		return resource.URI{}, err
	}
	if u.Query != "" {
		return resource.URI{}, fmt.Errorf("%q: a key id takes no query", s)
	}
	return u, nil
}

func systemContext(opts Options) *types.SystemContext {
	sys := &types.SystemContext{}
	if opts.SystemContext != nil {
		c := *opts.SystemContext
		sys = &c
	}
	if opts.Insecure {
		sys.DockerInsecureSkipTLSVerify = types.OptionalBoolTrue
	}
	return sys
}

// checkDestination makes sure, before the KEK is registered, that a
// registry destination answers with push access (TLS or plain HTTP as
// allowed, credentials), by asking whether it holds the empty blob. Local
// destinations are not checked: opening them creates them.
func checkDestination(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) error {
	if ref.Transport().Name() != docker.Transport.Name() {
		return nil
	}
	dest, err := ref.NewImageDestination(ctx, sys)
	if err != nil {
		return err
	}
	defer dest.Close()
	empty := types.BlobInfo{Digest: digest.FromBytes(nil), Size: 0}
	_, _, err = dest.TryReusingBlob(ctx, empty, none.NoCache, false)
	return err
}

// checkSource opens the source image (the instance for this platform, if
// it is a list) and checks that it has layers and none is encrypted
// (containers/image would copy those through as they are).
func checkSource(ctx context.Context, sys *types.SystemContext, ref types.ImageReference) error {
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return err
	}
	defer src.Close()
	img, err := image.FromUnparsedImage(ctx, sys, image.UnparsedInstance(src, nil))
	if err != nil {
		return err
	}
	layers := img.LayerInfos()
	if len(layers) == 0 {
		return errors.New("the image has no layers to encrypt")
	}
	for _, l := range layers {
		if decrypt.IsEncrypted(l.MediaType) {
			return fmt.Errorf("layer %s is already encrypted (%s)", l.Digest, l.MediaType)
		}
	}
	return nil
}
