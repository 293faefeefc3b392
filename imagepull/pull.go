package imagepull

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/pkg/compression"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"

	"github.com/guestd/guestd/imagepull/decrypt"
	"github.com/guestd/guestd/internal/atomicfile"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/rootfs"
	"github.com/guestd/guestd/snapshot"
)

// maxBlobBytes bounds a layer blob whose size the manifest does not give.
const maxBlobBytes = 64 << 30

// Puller pulls images into bundles. It is safe for concurrent use: pulls
// run in parallel, sharing layer downloads and layers.
type Puller struct {
	opts    Options
	log     *slog.Logger
	store   *snapshot.Store
	spool   *spool
	dec     *decrypt.Decrypter
	confDir string // generated registries.conf, registries.d, CA certs
}

// New prepares the work directory and the registry configuration. It
// fetches the registry configuration, the sigstore configuration and the
// decryption keys; the policy and the credentials are fetched at each pull.
func New(ctx context.Context, opts Options) (*Puller, error) {
	if opts.WorkDir == "" {
		opts.WorkDir = DefaultWorkDir
	}
	if opts.MaxConcurrentLayers <= 0 {
		opts.MaxConcurrentLayers = defaultLayerWorkers
	}
	if opts.OS == "" {
		opts.OS = "linux"
	}
	if opts.Architecture == "" {
		opts.Architecture = runtime.GOARCH
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(opts.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("image work dir: %w", err)
	}
	store, err := snapshot.Open(ctx, filepath.Join(opts.WorkDir, "store"))
	if err != nil {
		return nil, err
	}
	sp, err := newSpool(filepath.Join(opts.WorkDir, "spool"))
	if err != nil {
		return nil, err
	}
	p := &Puller{opts: opts, log: log, store: store, spool: sp, confDir: filepath.Join(opts.WorkDir, "conf")}
	if err := p.writeRegistryConfig(ctx); err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, k := range opts.DecryptionKeys {
		data := []byte(k)
		if isKBS(k) || strings.HasPrefix(k, "/") || strings.HasPrefix(k, "file://") {
			if data, err = fetchResource(ctx, opts.KBC, k); err != nil {
				return nil, fmt.Errorf("decryption key: %w", err)
			}
		}
		keys = append(keys, data)
	}
	p.dec = &decrypt.Decrypter{Unwrapper: &keyprovider.Unwrapper{KBC: opts.KBC}, PrivateKeys: keys}
	return p, nil
}

// writeRegistryConfig lays down the configuration containers/image reads
// from files: registries.conf, the registries.d sigstore configuration and
// the extra CA certificates. None of it is secret.
func (p *Puller) writeRegistryConfig(ctx context.Context) error {
	if err := os.RemoveAll(p.confDir); err != nil {
		return fmt.Errorf("registry configuration: %w", err)
	}
	for _, d := range []string{p.confDir, filepath.Join(p.confDir, "registries.conf.d"), filepath.Join(p.confDir, "registries.d"), filepath.Join(p.confDir, "certs")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("registry configuration: %w", err)
		}
	}
	regConf := p.opts.RegistriesConf
	if p.opts.RegistriesConfURI != "" {
		var err error
		if regConf, err = fetchResource(ctx, p.opts.KBC, p.opts.RegistriesConfURI); err != nil {
			return fmt.Errorf("registry configuration: %w", err)
		}
	}
	var b strings.Builder
	b.Write(regConf)
	for _, host := range p.opts.InsecureRegistries {
		fmt.Fprintf(&b, "\n[[registry]]\nlocation = %q\ninsecure = true\n", host)
	}
	if err := atomicfile.WriteFile(filepath.Join(p.confDir, "registries.conf"), []byte(b.String()), 0o600); err != nil {
		return fmt.Errorf("registry configuration: %w", err)
	}

	sig := p.opts.SigstoreConfig
	if p.opts.SigstoreConfigURI != "" {
		var err error
		if sig, err = fetchResource(ctx, p.opts.KBC, p.opts.SigstoreConfigURI); err != nil {
			return fmt.Errorf("sigstore configuration: %w", err)
		}
	}
	if len(sig) == 0 {
		// cosign signatures are sigstore attachments; containers/image
		// only looks for them when told to.
		sig = []byte("default-docker:\n  use-sigstore-attachments: true\n")
	}
	if err := atomicfile.WriteFile(filepath.Join(p.confDir, "registries.d", "guestd.yaml"), sig, 0o600); err != nil {
		return fmt.Errorf("sigstore configuration: %w", err)
	}
	for i, ca := range p.opts.ExtraRootCAs {
		if err := atomicfile.WriteFile(filepath.Join(p.confDir, "certs", fmt.Sprintf("extra-%d.crt", i)), ca, 0o600); err != nil {
			return fmt.Errorf("extra root CA: %w", err)
		}
	}
	return nil
}

// systemContext is the containers/image configuration of one pull.
func (p *Puller) systemContext(creds *types.DockerAuthConfig) *types.SystemContext {
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    filepath.Join(p.confDir, "registries.conf"),
		SystemRegistriesConfDirPath: filepath.Join(p.confDir, "registries.conf.d"),
		RegistriesDirPath:           filepath.Join(p.confDir, "registries.d"),
		DockerCertPath:              filepath.Join(p.confDir, "certs"),
		AuthFilePath:                filepath.Join(p.confDir, "no-auth.json"),
		DockerAuthConfig:            creds,
		DockerRegistryUserAgent:     "guestd",
		OSChoice:                    p.opts.OS,
		ArchitectureChoice:          p.opts.Architecture,
		VariantChoice:               p.opts.Variant,
		BigFilesTemporaryDir:        p.spool.dir,
	}
	if p.opts.HTTPSProxy != "" || p.opts.HTTPProxy != "" {
		sys.DockerProxy = proxyFunc(p.opts.HTTPSProxy, p.opts.HTTPProxy, p.opts.NoProxy)
	}
	return sys
}

// Pull pulls imageRef, verifies it against the image security policy,
// unpacks its layers into the layer store and mounts the bundle rootfs at
// bundle/rootfs with bundle/config.json beside it. It returns the digest of
// the image manifest that was unpacked.
func (p *Puller) Pull(ctx context.Context, imageRef, bundle string) (digest.Digest, error) {
	named, err := reference.ParseNormalizedNamed(imageRef)
	if err != nil {
		return "", fmt.Errorf("pull %s: image reference: %w", imageRef, err)
	}
	named = reference.TagNameOnly(named)
	// name:tag@digest is pulled by its digest, as image-rs and containerd
	// do; containers/image refuses a reference with both.
	if c, ok := named.(reference.Canonical); ok {
		if _, tagged := named.(reference.NamedTagged); tagged {
			if named, err = reference.WithDigest(reference.TrimNamed(named), c.Digest()); err != nil {
				return "", fmt.Errorf("pull %s: image reference: %w", imageRef, err)
			}
		}
	}
	name := named.String()
	p.event(Event{Image: name, Layer: -1, Phase: PhaseResolve})

	creds, err := p.credentials(ctx, named)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	sys := p.systemContext(creds)
	ref, err := docker.NewReference(named)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	defer src.Close()

	// The policy is evaluated on every pull, cached layers or not. The same
	// UnparsedImage serves the manifest afterwards, so the bytes that were
	// verified are the bytes that are used.
	top := image.UnparsedInstance(src, nil)
	if err := p.checkPolicy(ctx, top); err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	p.event(Event{Image: name, Layer: -1, Phase: PhaseVerify})

	unparsed := top
	raw, mime, err := top.Manifest(ctx)
	if err != nil {
		return "", fmt.Errorf("pull %s: manifest: %w", name, err)
	}
	if manifest.MIMETypeIsMultiImage(mime) {
		list, err := manifest.ListFromBlob(raw, mime)
		if err != nil {
			return "", fmt.Errorf("pull %s: manifest list: %w", name, err)
		}
		inst, err := list.ChooseInstance(sys)
		if err != nil {
			return "", fmt.Errorf("pull %s: %w", name, err)
		}
		unparsed = image.UnparsedInstance(src, &inst)
		if raw, mime, err = unparsed.Manifest(ctx); err != nil {
			return "", fmt.Errorf("pull %s: manifest %s: %w", name, inst, err)
		}
	}
	switch mime {
	case ocispec.MediaTypeImageManifest, manifest.DockerV2Schema2MediaType:
	default:
		return "", fmt.Errorf("pull %s: manifest type %q is not supported (want OCI or Docker schema 2)", name, mime)
	}
	mdigest, err := manifest.Digest(raw)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	cfg, err := img.OCIConfig(ctx)
	if err != nil {
		return "", fmt.Errorf("pull %s: image config: %w", name, err)
	}
	if cfg.OS != "linux" {
		return "", fmt.Errorf("pull %s: image OS is %q; only linux images run here", name, cfg.OS)
	}
	layers := img.LayerInfos()
	diffIDs := cfg.RootFS.DiffIDs
	if len(layers) == 0 || len(layers) != len(diffIDs) {
		return "", fmt.Errorf("pull %s: the manifest has %d layers and the config %d diff_ids", name, len(layers), len(diffIDs))
	}
	// Refuse a layer type nothing here can unpack before downloading
	// anything.
	for i, l := range layers {
		if !decrypt.IsEncrypted(l.MediaType) && !plainLayerType(l.MediaType) {
			return "", fmt.Errorf("pull %s: layer %d (%s): layer media type %q is not supported", name, i, l.Digest, l.MediaType)
		}
	}
	chain := identity.ChainIDs(append([]digest.Digest(nil), diffIDs...))

	// A concurrent Remove may collect the layers between unpack and Mount;
	// then they are made again (those still there cost nothing).
	for attempt := 0; ; attempt++ {
		if err := p.unpack(ctx, name, src, layers, diffIDs, chain); err != nil {
			return "", fmt.Errorf("pull %s: %w", name, err)
		}
		err := p.store.Mount(ctx, chain[len(chain)-1], bundle)
		if err == nil {
			break
		}
		if attempt > 0 || !errors.Is(err, snapshot.ErrNotFound) {
			return "", fmt.Errorf("pull %s: %w", name, err)
		}
	}
	if err := rootfs.WriteSpec(bundle, *cfg, rootfs.SpecOptions{}); err != nil {
		if rerr := p.store.Remove(context.WithoutCancel(ctx), bundle); rerr != nil {
			p.log.Warn("could not remove the bundle of a failed pull", "bundle", bundle, "err", rerr)
		}
		return "", fmt.Errorf("pull %s: %w", name, err)
	}
	p.event(Event{Image: name, Layer: -1, Layers: len(layers), Digest: mdigest.String(), Phase: PhaseMounted})
	p.log.Info("image pulled", "image", name, "digest", mdigest, "bundle", bundle, "layers", len(layers))
	return mdigest, nil
}

// Remove unmounts and deletes a bundle made by Pull, then collects layers
// no bundle uses any more.
func (p *Puller) Remove(ctx context.Context, bundle string) error {
	if err := p.store.Remove(ctx, bundle); err != nil {
		return err
	}
	if _, err := p.store.GC(ctx); err != nil {
		return fmt.Errorf("collect unused layers: %w", err)
	}
	return nil
}

func (p *Puller) credentials(ctx context.Context, named reference.Named) (*types.DockerAuthConfig, error) {
	if p.opts.AuthURI == "" {
		return nil, nil
	}
	data, err := fetchResource(ctx, p.opts.KBC, p.opts.AuthURI)
	if err != nil {
		return nil, fmt.Errorf("registry credentials: %w", err)
	}
	defer clear(data)
	return credentialsFor(data, named)
}

// checkPolicy evaluates the image security policy, if there is one.
func (p *Puller) checkPolicy(ctx context.Context, top types.UnparsedImage) error {
	data := p.opts.Policy
	if p.opts.PolicyURI != "" {
		var err error
		if data, err = fetchResource(ctx, p.opts.KBC, p.opts.PolicyURI); err != nil {
			return fmt.Errorf("image security policy: %w", err)
		}
	}
	if len(data) == 0 {
		if p.opts.RequirePolicy {
			return errors.New("signature verification is enabled but no image security policy is configured")
		}
		p.log.Warn("no image security policy: the image is not verified", "image", top.Reference().DockerReference())
		return nil
	}
	policy, err := loadPolicy(ctx, p.opts.KBC, data)
	if err != nil {
		return err
	}
	pc, err := signature.NewPolicyContext(policy)
	if err != nil {
		return fmt.Errorf("image security policy: %w", err)
	}
	defer pc.Destroy()
	allowed, err := pc.IsRunningImageAllowed(ctx, top)
	if err != nil {
		return fmt.Errorf("image security policy rejected the image: %w", err)
	}
	if !allowed {
		return errors.New("image security policy rejected the image")
	}
	return nil
}

type fetched struct {
	blob *spooled
	err  error
}

// unpack makes sure every layer of the chain is in the store. Missing
// blobs download MaxConcurrentLayers at a time, in layer order, while the
// layers are applied in order: the layer whose turn it is streams through
// the applier as its bytes arrive (see spool).
func (p *Puller) unpack(ctx context.Context, name string, src types.ImageSource, layers []types.BlobInfo, diffIDs, chain []digest.Digest) error {
	ctx, cancel := context.WithCancel(ctx)
	n := len(layers)
	results := make([]chan fetched, n)
	for i := range n {
		if !p.store.HasLayer(chain[i]) {
			results[i] = make(chan fetched, 1)
		}
	}
	// A slot is held from a blob's download start until its layer is
	// applied, so at most MaxConcurrentLayers blobs sit in the spool.
	slots := make(chan struct{}, p.opts.MaxConcurrentLayers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			if results[i] == nil {
				continue
			}
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				results[i] <- fetched{err: ctx.Err()}
				continue
			}
			b, err := p.spool.get(ctx, layers[i].Digest, p.blobFetcher(name, src, i, n, layers[i]))
			if err != nil {
				<-slots
			}
			results[i] <- fetched{blob: b, err: err}
		}
	}()
	consumed := make([]bool, n)
	release := func(f fetched) {
		if f.blob != nil {
			f.blob.Release()
			<-slots
		}
	}
	defer func() {
		cancel()
		wg.Wait()
		for i, ch := range results {
			if ch != nil && !consumed[i] {
				release(<-ch)
			}
		}
	}()

	for i := range n {
		var parent digest.Digest
		if i > 0 {
			parent = chain[i-1]
		}
		applied := false
		err := p.store.EnsureLayer(ctx, chain[i], parent, func(ctx context.Context, dir string, parents []string) error {
			applied = true
			var f fetched
			if results[i] != nil {
				f = <-results[i]
				consumed[i] = true
				defer release(f)
			} else { // the layer vanished (collected) since we looked
				f.blob, f.err = p.spool.get(ctx, layers[i].Digest, p.blobFetcher(name, src, i, n, layers[i]))
				if f.blob != nil {
					defer f.blob.Release()
				}
			}
			if f.err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, layers[i].Digest, f.err)
			}
			p.event(Event{Image: name, Layer: i, Layers: n, Digest: layers[i].Digest.String(), Phase: PhaseApply, Size: layers[i].Size})
			if err := p.applyLayer(ctx, f.blob, layers[i], diffIDs[i], dir, parents); err != nil {
				return fmt.Errorf("layer %d (%s): %w", i, layers[i].Digest, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
		if !applied {
			if results[i] != nil && !consumed[i] {
				consumed[i] = true
				release(<-results[i])
			}
			p.event(Event{Image: name, Layer: i, Layers: n, Digest: layers[i].Digest.String(), Phase: PhaseCached, Size: layers[i].Size})
			continue
		}
		p.event(Event{Image: name, Layer: i, Layers: n, Digest: layers[i].Digest.String(), Phase: PhaseDone, Size: layers[i].Size})
	}
	return nil
}

// blobFetcher downloads a layer blob, checking its size and digest.
func (p *Puller) blobFetcher(name string, src types.ImageSource, i, n int, li types.BlobInfo) func(context.Context, io.Writer) error {
	return func(ctx context.Context, w io.Writer) error {
		rc, _, err := src.GetBlob(ctx, li, none.NoCache)
		if err != nil {
			return fmt.Errorf("fetch blob: %w", err)
		}
		defer rc.Close()
		limit := int64(maxBlobBytes)
		if li.Size >= 0 {
			limit = li.Size
		}
		verifier := li.Digest.Verifier()
		pw := &progressWriter{p: p, ev: Event{Image: name, Layer: i, Layers: n, Digest: li.Digest.String(), Phase: PhaseFetch, Size: li.Size}}
		got, err := io.Copy(io.MultiWriter(w, verifier, pw), io.LimitReader(rc, limit+1))
		if err != nil {
			return fmt.Errorf("fetch blob: %w", err)
		}
		if got > limit {
			return fmt.Errorf("blob is larger than the %d bytes the manifest gives", limit)
		}
		if li.Size >= 0 && got != li.Size {
			return fmt.Errorf("blob is %d bytes, the manifest says %d", got, li.Size)
		}
		if !verifier.Verified() {
			return fmt.Errorf("blob does not match its digest %s: the registry served other bytes", li.Digest)
		}
		return nil
	}
}

// applyLayer streams one blob, as it downloads, through decryption (if
// needed), decompression and the applier, checking the result against
// diffID; the blob's own digest verdict must arrive before the layer counts.
func (p *Puller) applyLayer(ctx context.Context, blob *spooled, li types.BlobInfo, diffID digest.Digest, dir string, parents []string) error {
	if err := diffID.Validate(); err != nil {
		return fmt.Errorf("diff_id %q: %w", diffID, err)
	}
	f, err := blob.Open(ctx)
	if err != nil {
		return err
	}
	defer f.Close()
	var stream io.Reader = f
	check := func() error { return nil }
	if decrypt.IsEncrypted(li.MediaType) {
		desc := ocispec.Descriptor{MediaType: li.MediaType, Digest: li.Digest, Size: li.Size, Annotations: li.Annotations}
		if stream, check, err = p.dec.Layer(ctx, desc, f); err != nil {
			return fmt.Errorf("decrypt: %w", err)
		}
	} // else a plain layer type: Pull refused every other type up front.
	applyErr := func() error {
		tarStream, _, err := compression.AutoDecompress(stream)
		if err != nil {
			return fmt.Errorf("decompress: %w", err)
		}
		defer tarStream.Close()
		verifier := diffID.Verifier()
		if _, err := rootfs.Apply(ctx, dir, io.TeeReader(tarStream, verifier), rootfs.ApplyOptions{Parents: parents, MaxBytes: p.opts.MaxLayerBytes}); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		// Whatever the tar reader left (padding) still counts for the digest.
		if _, err := io.Copy(verifier, tarStream); err != nil {
			return fmt.Errorf("decompress: %w", err)
		}
		if err := check(); err != nil {
			return fmt.Errorf("decrypt: %w", err)
		}
		if !verifier.Verified() {
			return fmt.Errorf("layer content does not match its diff_id %s", diffID)
		}
		return nil
	}()
	// The download's verdict comes first: a blob that does not match its
	// digest explains any later failure, and nothing counts without it.
	// After a failure there is no point waiting for the rest of the blob.
	if applyErr != nil {
		if finished, err := blob.Result(); finished && err != nil {
			return err
		}
		return applyErr
	}
	return blob.Wait(ctx)
}

func plainLayerType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		ocispec.MediaTypeImageLayerNonDistributable, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // still met
		ocispec.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		manifest.DockerV2Schema2LayerMediaType, manifest.DockerV2SchemaLayerMediaTypeUncompressed,
		manifest.DockerV2Schema2ForeignLayerMediaType, manifest.DockerV2Schema2ForeignLayerMediaTypeGzip:
		return true
	}
	return false
}

func (p *Puller) event(e Event) {
	if p.opts.Progress != nil {
		e.Time = time.Now()
		p.opts.Progress(e)
	}
}

// progressWriter reports fetch progress at most every 100 ms.
type progressWriter struct {
	p    *Puller
	ev   Event
	last time.Time
}

func (w *progressWriter) Write(b []byte) (int, error) {
	w.ev.Bytes += int64(len(b))
	if now := time.Now(); now.Sub(w.last) >= 100*time.Millisecond || (w.ev.Size >= 0 && w.ev.Bytes >= w.ev.Size) {
		w.last = now
		w.p.event(w.ev)
	}
	return len(b), nil
}
