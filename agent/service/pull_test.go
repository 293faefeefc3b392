package service_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/test/images"
)

// gate is a reverse proxy to a registry that holds every request for the
// manifests of one repository until released.
type gate struct {
	*httptest.Server
	repo     string
	arrived  chan struct{} // closed when the first held request arrives
	release  chan struct{}
	onceHeld sync.Once
}

func newGate(t *testing.T, registryURL, repo string) *gate {
	t.Helper()
	u, err := url.Parse(registryURL)
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{repo: repo, arrived: make(chan struct{}), release: make(chan struct{})}
	proxy := httputil.NewSingleHostReverseProxy(u)
	g.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/manifests/") {
			g.onceHeld.Do(func() { close(g.arrived) })
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(g.Close)
	t.Cleanup(g.open)
	return g
}

func (g *gate) open() {
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

func (g *gate) host() string { return strings.TrimPrefix(g.URL, "http://") }

// TestPullImage pulls a plain image and an encrypted, cosign-signed one
// (policy, cosign key and KEK from the KBS) over every transport, checks the
// bundles and the runtime measurements of the pulls, proves that two pulls
// run at once, and checks the error codes.
func TestPullImage(t *testing.T) {
	e := newImageEnv(t)
	images.Push(t, e.plain, e.reg, "app/rejected:1")
	images.Push(t, e.plain, e.reg, "app/slow:1")
	images.Push(t, e.plain, e.reg, "app/fast:1")
	policy := fmt.Sprintf(`{
  "default": [{"type": "insecureAcceptAnything"}],
  "transports": {"docker": {
    %[1]q: [{"type": "sigstoreSigned", "keyPath": "kbs:///default/cosign-key/1", "signedIdentity": {"type": "matchRepository"}}],
    %[2]q: [{"type": "reject"}]
  }}
}`, e.reg.Host+"/app/enc", e.reg.Host+"/app/rejected")
	e.put(t, "kbs:///default/security-policy/test", []byte(policy))
	e.put(t, "kbs:///default/cosign-key/1", e.cosignPub)
	g := newGate(t, e.reg.URL, "app/slow")

	ctx := context.Background()
	puller, err := imagepull.New(ctx, imagepull.Options{
		WorkDir:            filepath.Join(t.TempDir(), "work"),
		KBC:                e.client,
		PolicyURI:          "kbs:///default/security-policy/test",
		InsecureRegistries: []string{e.reg.Host, g.host()},
		Architecture:       "amd64",
		Logger:             testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	log := openLog(t, openPCRs(t))
	aa, err := service.NewAA(service.AAConfig{Attester: sample.New(), KBS: e.client, Eventlog: log, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cdh := service.NewCDH(service.CDHConfig{KBC: e.client, Puller: puller, Measurer: aa, Logger: testLogger(t)})
	newBundle := func(t *testing.T) string {
		b := t.TempDir()
		t.Cleanup(func() { _ = puller.Remove(context.Background(), b) })
		return b
	}
	type pulled struct{ image, digest string }
	var measured []pulled

	for i, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			_, side := tr.serve(t, nil, cdh, nil)
			for _, ref := range []images.Ref{e.plainRef, e.encRef} {
				image := fmt.Sprintf("%s/%s:%s", e.reg.Host, ref.Repo, ref.Tag)
				bundle := newBundle(t)
				resp, err := side.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: image, BundlePath: bundle})
				if err != nil {
					t.Fatalf("pull %s: %v", image, err)
				}
				if resp.GetManifestDigest() != ref.Digest.String() {
					t.Fatalf("pull %s: digest %s, want %s", image, resp.GetManifestDigest(), ref.Digest)
				}
				rootfsMatches(t, bundle)
				measured = append(measured, pulled{image, ref.Digest.String()})
			}

			// Two pulls at once: the first is held at the registry until
			// the second has finished, which a global pull lock would
			// deadlock.
			if i == 0 {
				slow, fast := g.host()+"/app/slow:1", g.host()+"/app/fast:1"
				done := make(chan error, 1)
				slowBundle := newBundle(t)
				go func() {
					_, err := side.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: slow, BundlePath: slowBundle})
					done <- err
				}()
				select {
				case <-g.arrived:
				case err := <-done:
					t.Fatalf("the held pull ended: %v", err)
				}
				fastBundle := newBundle(t)
				if _, err := side.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: fast, BundlePath: fastBundle}); err != nil {
					t.Fatalf("pull while another is in progress: %v", err)
				}
				rootfsMatches(t, fastBundle)
				g.open()
				if err := <-done; err != nil {
					t.Fatalf("held pull: %v", err)
				}
				rootfsMatches(t, slowBundle)
				d := e.plainRef.Digest.String()
				measured = append(measured, pulled{fast, d}, pulled{slow, d})
			}

			mounted := newBundle(t)
			if _, err := side.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: e.reg.Host + "/app/plain:1", BundlePath: mounted}); err != nil {
				t.Fatal(err)
			}
			measured = append(measured, pulled{e.reg.Host + "/app/plain:1", e.plainRef.Digest.String()})
			for _, tc := range []struct {
				name, image, bundle string
				code                codes.Code
				parts               []string
			}{
				{"relative bundle", e.reg.Host + "/app/plain:1", "run/bundle", codes.InvalidArgument, []string{"bundle_path"}},
				{"root as bundle", e.reg.Host + "/app/plain:1", "/", codes.InvalidArgument, []string{"bundle_path"}},
				{"bundle with ..", e.reg.Host + "/app/plain:1", newBundle(t) + "/../x", codes.InvalidArgument, []string{"bundle_path"}},
				{"empty image", "", newBundle(t), codes.InvalidArgument, []string{"empty image_url"}},
				{"bad reference", e.reg.Host + "/App/Plain:1", newBundle(t), codes.InvalidArgument, []string{"image_url"}},
				{"missing tag", e.reg.Host + "/app/plain:nope", newBundle(t), codes.NotFound, []string{"app/plain:nope", "manifest unknown"}},
				{"missing repository", e.reg.Host + "/app/none:1", newBundle(t), codes.NotFound, []string{"app/none:1"}},
				{"policy rejects", e.reg.Host + "/app/rejected:1", newBundle(t), codes.PermissionDenied, []string{"app/rejected:1", "policy", "rejected"}},
				{"registry unreachable", closedAddr(t) + "/app/plain:1", newBundle(t), codes.Unavailable, []string{"connection refused"}},
				{"already mounted", e.reg.Host + "/app/plain:1", mounted, codes.AlreadyExists, []string{"already exists"}},
			} {
				_, err := side.pull.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: tc.image, BundlePath: tc.bundle})
				wantCode(t, tc.name, err, tc.code, append(tc.parts, "PullImage")...)
			}
		})
	}

	// Every successful pull, and only those, was measured as upstream's
	// data hub measures it.
	entries, err := eventlog.ReadFile(log.Path())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(measured) {
		t.Fatalf("%d log entries, want %d", len(entries), len(measured))
	}
	got := map[string]int{}
	for _, en := range entries {
		if en.Domain != service.PullImageDomain || en.Operation != service.PullImageOperation || en.Register != 16 {
			t.Errorf("entry %+v", en)
		}
		got[en.Content]++
	}
	for _, p := range measured {
		content := fmt.Sprintf(`{"image":%q, "digest":%q}`, p.image, p.digest)
		if got[content] == 0 {
			t.Errorf("no log entry %s (entries %v)", content, got)
		}
		got[content]--
	}

	// A pull that cannot be measured fails and leaves no mounted bundle.
	unmeasured := service.NewCDH(service.CDHConfig{Puller: puller, Measurer: failingMeasurer{}, Logger: testLogger(t)})
	b := newBundle(t)
	_, err = unmeasured.PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: e.reg.Host + "/app/plain:1", BundlePath: b})
	wantCode(t, "unmeasured pull", err, codes.Internal, "record the pull", "TPM gone")
	if ents, _ := os.ReadDir(filepath.Join(b, "rootfs")); len(ents) != 0 {
		t.Errorf("unmeasured pull left %d entries in its rootfs", len(ents))
	}

	// A layer whose KEK is wrong: the error names the layer, its digest and
	// the kid (a fresh work dir, so that nothing is cached).
	fresh, err := imagepull.New(ctx, imagepull.Options{WorkDir: filepath.Join(t.TempDir(), "work"), KBC: e.client,
		InsecureRegistries: []string{e.reg.Host}, Architecture: "amd64"})
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, kekURI, make([]byte, 32))
	encLayer, _ := e.encryptedLayer(t)
	_, err = service.NewCDH(service.CDHConfig{Puller: fresh}).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: e.reg.Host + "/app/enc:1", BundlePath: t.TempDir()})
	wantCode(t, "wrong KEK", err, codes.FailedPrecondition, "layer 0", encLayer.Digest.String(), kekURI, "authentication failed")

	_, err = service.NewCDH(service.CDHConfig{}).PullImage(ctx, &cdhpb.ImagePullRequest{ImageUrl: "busybox", BundlePath: t.TempDir()})
	wantCode(t, "no puller", err, codes.FailedPrecondition, "not configured")
}

// failingMeasurer answers every measurement with an error.
type failingMeasurer struct{}

func (failingMeasurer) ExtendRuntimeMeasurement(context.Context, *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	return nil, fmt.Errorf("TPM gone")
}
