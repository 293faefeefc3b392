package images

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/test/registry"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// skopeoHint is the command that installs skopeo.
const skopeoHint = "apt-get install -y skopeo"

// Ref is an image pushed to a registry (or reachable through a proxy).
type Ref struct {
	// Target is the registry or proxy the image is reached through.
	Target registry.Target
	// Repo is the repository path, e.g. "test/busybox".
	Repo string
	// Tag may be "" for an image pushed by digest only.
	Tag string
	// Digest is the digest of the top-level manifest or index.
	Digest digest.Digest
}

// Host returns "127.0.0.1:PORT".
func (r Ref) Host() string { return r.Target.Addr().Host }

// Name returns "HOST/REPO".
func (r Ref) Name() string { return r.Host() + "/" + r.Repo }

// String returns "HOST/REPO:TAG", or the digested form without a tag.
func (r Ref) String() string {
	if r.Tag == "" {
		return r.Digested()
	}
	return r.Name() + ":" + r.Tag
}

// Digested returns "HOST/REPO@sha256:...".
func (r Ref) Digested() string { return r.Name() + "@" + r.Digest.String() }

// Docker returns the skopeo/containers transport form "docker://" + String().
func (r Ref) Docker() string { return "docker://" + r.String() }

// Via returns the same image reached through t (e.g. a tampering proxy in
// front of the registry it was pushed to).
func (r Ref) Via(t registry.Target) Ref { r.Target = t; return r }

// splitRepoTag splits "repo:tag" (tag defaults to "latest").
func splitRepoTag(repoTag string) (repo, tag string) {
	i := strings.LastIndex(repoTag, ":")
	if i < 0 || strings.Contains(repoTag[i:], "/") {
		return repoTag, "latest"
	}
	return repoTag[:i], repoTag[i+1:]
}

// Push copies a into the registry at to as repoTag ("repo[:tag]", tag
// "latest" by default) with the real skopeo: it writes an OCI layout (a
// dir: image for Docker media types) and runs skopeo copy
// --preserve-digests (with --all for an index), using the target's cert
// dir and credentials. It fails the test unless the pushed
// digest is a's own.
func Push(t testing.TB, a Artifact, to registry.Target, repoTag string) Ref {
	t.Helper()
	desc, err := a.Descriptor()
	if err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	src, extra := skopeoSource(t, a, desc)
	repo, tag := splitRepoTag(repoTag)
	ref := Ref{Target: to, Repo: repo, Tag: tag, Digest: desc.Digest}
	digestFile := filepath.Join(shortTempDir(t, "push"), "digest")
	args := append([]string{"copy", "--quiet", "--preserve-digests", "--digestfile", digestFile}, extra...)
	args = append(args, to.Addr().SkopeoFlags("dest")...)
	args = append(args, src, ref.Docker())
	Skopeo(t, args...)
	got, err := os.ReadFile(digestFile)
	if err != nil {
		t.Fatalf("push %s: read skopeo digest file: %v", ref, err)
	}
	if d := digest.Digest(strings.TrimSpace(string(got))); d != desc.Digest {
		t.Fatalf("push %s: skopeo pushed digest %s, want %s", ref, d, desc.Digest)
	}
	return ref
}

// skopeoSource writes a where skopeo can read it and returns the skopeo
// source and the copy flags it needs: an OCI layout ("oci:DIR:image"), or
// for Docker schema 2 media types, which c/image does not read from OCI
// layouts, the dir: transport. An index needs --all.
func skopeoSource(t testing.TB, a Artifact, desc ocispec.Descriptor) (string, []string) {
	t.Helper()
	var extra []string
	if desc.MediaType == ocispec.MediaTypeImageIndex || desc.MediaType == MediaTypeDockerManifestList {
		extra = append(extra, "--all")
	}
	dir := shortTempDir(t, "src")
	if desc.MediaType == MediaTypeDockerManifest || desc.MediaType == MediaTypeDockerManifestList {
		if err := WriteDir(dir, a); err != nil {
			t.Fatal(err)
		}
		return "dir:" + dir, extra
	}
	if err := WriteOCILayout(dir, "image", a); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":image", extra
}

// Skopeo runs skopeo with a policy that accepts anything, no registries.d,
// registries.conf or auth file of the machine's (unless args name their
// own), and fails the test on error. It returns skopeo's stdout.
func Skopeo(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := RunSkopeo(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// RunSkopeo is Skopeo returning the error (with skopeo's output) instead of
// failing: for copies that must be refused. Global flags --policy and
// --registries.d in args replace the permissive defaults.
func RunSkopeo(t testing.TB, args ...string) ([]byte, error) {
	t.Helper()
	return runSkopeo(t, nil, args...)
}

// runSkopeo is RunSkopeo with env added to skopeo's environment.
func runSkopeo(t testing.TB, env []string, args ...string) ([]byte, error) {
	t.Helper()
	bin, err := exec.LookPath("skopeo")
	if err != nil {
		t.Fatalf("skopeo is not installed (%v); install it with: %s", err, skopeoHint)
	}
	dir := shortTempDir(t, "skopeo")
	var global []string
	if !hasFlag(args, "--policy") {
		p := filepath.Join(dir, "policy.json")
		writeFile(t, p, AcceptAnythingPolicy())
		global = append(global, "--policy", p)
	}
	if !hasFlag(args, "--registries.d") {
		d := filepath.Join(dir, "registries.d")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatalf("create %s: %v", d, err)
		}
		global = append(global, "--registries.d", d)
	}
	regConf := filepath.Join(dir, "registries.conf")
	writeFile(t, regConf, []byte("unqualified-search-registries = []\n"))
	authFile := filepath.Join(dir, "auth.json")
	writeFile(t, authFile, []byte(`{"auths":{}}`))

	cmd := exec.Command(bin, append(global, args...)...)
	cmd.Env = append(os.Environ(),
		"CONTAINERS_REGISTRIES_CONF="+regConf,
		"REGISTRY_AUTH_FILE="+authFile,
		"TMPDIR="+dir,
	)
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("skopeo %s: %w\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// hasFlag reports whether args contain --name or --name=value.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// PushRaw puts a into the registry at to as repoTag with the registry
// HTTP API itself (monolithic blob uploads, manifests by digest, the
// top-level one by tag), checking nothing about the content: for hostile
// images skopeo would refuse or repair. The registry still checks blob
// digests and that manifests reference existing blobs.
func PushRaw(t testing.TB, a Artifact, to registry.Target, repoTag string) Ref {
	t.Helper()
	desc, err := a.Descriptor()
	if err != nil {
		t.Fatalf("raw push %s: %v", repoTag, err)
	}
	blobs, err := a.Blobs()
	if err != nil {
		t.Fatalf("raw push %s: %v", repoTag, err)
	}
	repo, tag := splitRepoTag(repoTag)
	for i, b := range blobs {
		top := i == len(blobs)-1
		switch {
		case top:
			data, err := b.Bytes()
			if err != nil {
				t.Fatalf("raw push %s: %v", repoTag, err)
			}
			PushManifest(t, to, repo, tag, b.MediaType, data)
		case isManifest(b.MediaType):
			data, err := b.Bytes()
			if err != nil {
				t.Fatalf("raw push %s: %v", repoTag, err)
			}
			PushManifest(t, to, repo, b.Digest.String(), b.MediaType, data)
		default:
			pushBlob(t, to, repo, b)
		}
	}
	return Ref{Target: to, Repo: repo, Tag: tag, Digest: desc.Digest}
}

// PushBlob uploads data as a blob of repo and returns its digest.
func PushBlob(t testing.TB, to registry.Target, repo string, data []byte) digest.Digest {
	t.Helper()
	b := NewBlob("application/octet-stream", data)
	pushBlob(t, to, repo, b)
	return b.Digest
}

// pushBlob uploads b unless the registry already has it: POST an upload
// session, then PUT the whole blob with ?digest=.
func pushBlob(t testing.TB, to registry.Target, repo string, b Blob) {
	t.Helper()
	e := to.Addr()
	head, err := http.NewRequest(http.MethodHead, e.URL+"/v2/"+repo+"/blobs/"+b.Digest.String(), nil)
	if err != nil {
		t.Fatalf("check blob %s in %s: %v", b.Digest, repo, err)
	}
	if resp := do(t, e, head, "check blob "+b.Digest.String()); resp.StatusCode == http.StatusOK {
		return
	}

	post, err := http.NewRequest(http.MethodPost, e.URL+"/v2/"+repo+"/blobs/uploads/", nil)
	if err != nil {
		t.Fatalf("start upload of %s to %s: %v", b.Digest, repo, err)
	}
	resp := do(t, e, post, "start upload of "+b.Digest.String())
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload of %s to %s: status %s", b.Digest, repo, resp.Status)
	}
	loc, err := url.Parse(e.URL)
	if err == nil {
		loc, err = loc.Parse(resp.Header.Get("Location"))
	}
	if err != nil {
		t.Fatalf("upload of %s to %s: bad Location %q: %v", b.Digest, repo, resp.Header.Get("Location"), err)
	}
	q := loc.Query()
	q.Set("digest", b.Digest.String())
	loc.RawQuery = q.Encode()

	body, err := b.Open()
	if err != nil {
		t.Fatalf("upload %s to %s: %v", b.Digest, repo, err)
	}
	defer body.Close()
	put, err := http.NewRequest(http.MethodPut, loc.String(), body)
	if err != nil {
		t.Fatalf("upload %s to %s: %v", b.Digest, repo, err)
	}
	put.ContentLength = b.Size
	put.Header.Set("Content-Type", "application/octet-stream")
	if resp := do(t, e, put, "upload "+b.Digest.String()); resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s to %s: status %s", b.Digest, repo, resp.Status)
	}
}

// PushManifest PUTs body as the manifest reference (a tag or a digest) of
// repo with Content-Type mediaType and returns the digest the registry
// reports.
func PushManifest(t testing.TB, to registry.Target, repo, reference, mediaType string, body []byte) digest.Digest {
	t.Helper()
	e := to.Addr()
	req, err := http.NewRequest(http.MethodPut, e.URL+"/v2/"+repo+"/manifests/"+reference, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("put manifest %s:%s: %v", repo, reference, err)
	}
	req.Header.Set("Content-Type", mediaType)
	resp := do(t, e, req, "put manifest "+repo+":"+reference)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: status %s", repo, reference, resp.Status)
	}
	d := digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	if want := digest.FromBytes(body); d != want {
		t.Fatalf("put manifest %s:%s: registry reports digest %q, want %s", repo, reference, d, want)
	}
	return d
}

// ManifestDigest asks the registry at to for the digest of the manifest or
// index repo:reference.
func ManifestDigest(t testing.TB, to registry.Target, repo, reference string) digest.Digest {
	t.Helper()
	e := to.Addr()
	req, err := http.NewRequest(http.MethodHead, e.URL+"/v2/"+repo+"/manifests/"+reference, nil)
	if err != nil {
		t.Fatalf("head manifest %s:%s: %v", repo, reference, err)
	}
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.distribution.manifest.list.v2+json"}, ", "))
	resp := do(t, e, req, "head manifest "+repo+":"+reference)
	d, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		t.Fatalf("head manifest %s:%s: digest: %v (HTTP %d)", repo, reference, err, resp.StatusCode)
	}
	return d
}

// do sends req with the endpoint's credentials, drains and closes the body
// (keeping up to 4 KiB of it in the error of a failed status), and fails
// the test on a transport error or an unexpected 4xx/5xx.
func do(t testing.TB, e *registry.Endpoint, req *http.Request, what string) *http.Response {
	t.Helper()
	e.SetAuth(req)
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode >= 400 && !(req.Method == http.MethodHead && resp.StatusCode == http.StatusNotFound) {
		t.Fatalf("%s: %s %s: status %s: %s", what, req.Method, req.URL.Redacted(), resp.Status, msg)
	}
	return resp
}

// shortTempDir returns a new temp dir removed when the test ends. Its path
// is short and has no ':' (unlike t.TempDir, whose path contains the test
// name): skopeo's oci:DIR:TAG and socket paths need that.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "guestd-"+prefix+"-")
	if err != nil {
		t.Fatalf("create temp dir: %v", err)
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove temp dir %s: %v", dir, err)
		}
	})
	return dir
}

// writeFile writes data to path or fails the test.
func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}
