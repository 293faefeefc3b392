package images_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// decompress returns a reader of the tar inside a layer blob of the given
// media type.
func decompress(t testing.TB, mediaType string, r io.Reader) io.Reader {
	t.Helper()
	switch {
	case strings.HasSuffix(mediaType, "gzip"):
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("gzip layer: %v", err)
		}
		return zr
	case strings.HasSuffix(mediaType, "zstd"):
		zr, err := zstd.NewReader(r)
		if err != nil {
			t.Fatalf("zstd layer: %v", err)
		}
		t.Cleanup(zr.Close)
		return zr
	default:
		return r
	}
}

// entry is what a test checks of a tar header.
type entry struct {
	name, link string
	typ        byte
	mode       int64
	uid, gid   int
	content    string
	xattrs     map[string]string
}

// readTar lists the entries of a tar stream.
func readTar(t testing.TB, r io.Reader) []entry {
	t.Helper()
	var out []entry
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read tar entry %s: %v", h.Name, err)
		}
		e := entry{name: h.Name, link: h.Linkname, typ: h.Typeflag, mode: h.Mode, uid: h.Uid, gid: h.Gid, content: string(body)}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if e.xattrs == nil {
					e.xattrs = map[string]string{}
				}
				e.xattrs[x] = v
			}
		}
		out = append(out, e)
	}
}

// layerTar decompresses a layer and checks its diff_id.
func layerTar(t testing.TB, l images.Layer) []byte {
	t.Helper()
	rc, err := l.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	data, err := io.ReadAll(decompress(t, l.MediaType, rc))
	if err != nil {
		t.Fatalf("decompress layer %s: %v", l.Digest, err)
	}
	if d := digest.FromBytes(data); d != l.DiffID {
		t.Fatalf("layer %s: uncompressed digest %s, diff_id %s", l.Digest, d, l.DiffID)
	}
	return data
}

func TestLayerEntriesAndCompressions(t *testing.T) {
	t.Parallel()
	entries := []images.Entry{
		images.Dir("etc"),
		images.File("etc/config", "key=value\n").WithMode(0o600).WithOwner(1000, 1001),
		images.File("etc/setuid", "x").WithMode(0o4755),
		images.Symlink("etc/link", "config"),
		images.Hardlink("etc/hard", "etc/config"),
		images.Whiteout("usr/gone"),
		images.Opaque("var/cache"),
		images.File("etc/labelled", "y").WithXattr("user.test", "v"),
		{Name: "dev/null", Kind: images.KindCharDev, Devmajor: 1, Devminor: 3},
		{Name: "run/fifo", Kind: images.KindFIFO},
		images.File("../escape", "hostile names are kept verbatim"),
		images.File("/abs/path", "so are absolute ones"),
	}
	want := []entry{
		{name: "etc", typ: tar.TypeDir, mode: 0o755},
		{name: "etc/config", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1001, content: "key=value\n"},
		{name: "etc/setuid", typ: tar.TypeReg, mode: 0o4755, content: "x"},
		{name: "etc/link", link: "config", typ: tar.TypeSymlink, mode: 0o777},
		{name: "etc/hard", link: "etc/config", typ: tar.TypeLink, mode: 0o644},
		{name: "usr/.wh.gone", typ: tar.TypeReg, mode: 0o644},
		{name: "var/cache/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644},
		{name: "etc/labelled", typ: tar.TypeReg, mode: 0o644, content: "y", xattrs: map[string]string{"user.test": "v"}},
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666},
		{name: "run/fifo", typ: tar.TypeFifo, mode: 0o644},
		{name: "../escape", typ: tar.TypeReg, mode: 0o644, content: "hostile names are kept verbatim"},
		{name: "/abs/path", typ: tar.TypeReg, mode: 0o644, content: "so are absolute ones"},
	}
	var diffIDs []digest.Digest
	for _, c := range []images.Compression{images.Gzip, images.Zstd, images.Uncompressed} {
		l := images.NewLayer(t, c, entries...)
		if l.MediaType != c.MediaType() || l.Digest != digest.FromBytes(l.Data) || l.Size != int64(len(l.Data)) {
			t.Fatalf("%s layer blob: %+v", c, l.Descriptor())
		}
		got := readTar(t, bytes.NewReader(layerTar(t, l)))
		if len(got) != len(want) {
			t.Fatalf("%s layer: %d entries, want %d: %+v", c, len(got), len(want), got)
		}
		for i := range want {
			g, w := got[i], want[i]
			if g.name != w.name || g.link != w.link || g.typ != w.typ || g.mode != w.mode || g.uid != w.uid ||
				g.gid != w.gid || g.content != w.content || len(g.xattrs) != len(w.xattrs) || g.xattrs["user.test"] != w.xattrs["user.test"] {
				t.Errorf("%s entry %d: got %+v, want %+v", c, i, g, w)
			}
		}
		// Builds are reproducible.
		if again := images.NewLayer(t, c, entries...); again.Digest != l.Digest {
			t.Errorf("%s layer is not reproducible: %s then %s", c, l.Digest, again.Digest)
		}
		diffIDs = append(diffIDs, l.DiffID)
	}
	if diffIDs[0] != diffIDs[1] || diffIDs[1] != diffIDs[2] {
		t.Fatalf("the same entries give different diff_ids per compression: %v", diffIDs)
	}
	if _, err := images.BuildLayer(images.Gzip, images.Entry{Name: "x", Kind: images.Kind(99)}); err == nil {
		t.Fatalf("unknown entry kind accepted")
	}
}

// layoutBlob reads a blob from an OCI layout.
func layoutBlob(t testing.TB, dir string, d digest.Digest) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded()))
	if err != nil {
		t.Fatalf("layout blob %s: %v", d, err)
	}
	if got := digest.FromBytes(b); got != d {
		t.Fatalf("layout blob %s has digest %s", d, got)
	}
	return b
}

func TestOCILayoutIsValid(t *testing.T) {
	t.Parallel()
	img := images.Busybox(t)
	img.Layers = append(img.Layers,
		images.NewLayer(t, images.Zstd, images.Dir("app"), images.File("app/run.sh", "#!/bin/sh\necho app\n").WithMode(0o755)),
		images.NewLayer(t, images.Uncompressed, images.Whiteout("etc/hostname")))
	img.Config = images.Config{Entrypoint: []string{"/app/run.sh"}, Cmd: []string{"--flag"}, Env: []string{"A=1"},
		WorkingDir: "/app", User: "1000:1000", Labels: map[string]string{"l": "v"}}
	dir := t.TempDir()
	if err := images.WriteOCILayout(dir, "v1", img); err != nil {
		t.Fatal(err)
	}
	// A second tag in the same layout keeps the first.
	if err := images.WriteOCILayout(dir, "small", images.Image{Layers: img.Layers[2:]}); err != nil {
		t.Fatal(err)
	}

	var layout ocispec.ImageLayout
	if b, err := os.ReadFile(filepath.Join(dir, "oci-layout")); err != nil || json.Unmarshal(b, &layout) != nil || layout.Version != "1.0.0" {
		t.Fatalf("oci-layout: %v %+v", err, layout)
	}
	var idx ocispec.Index
	if b, err := os.ReadFile(filepath.Join(dir, "index.json")); err != nil || json.Unmarshal(b, &idx) != nil {
		t.Fatalf("index.json: %v", err)
	}
	desc, _ := img.Descriptor()
	if len(idx.Manifests) != 2 || idx.Manifests[0].Digest != desc.Digest || idx.Manifests[0].Annotations[ocispec.AnnotationRefName] != "v1" {
		t.Fatalf("index.json manifests: %+v", idx.Manifests)
	}

	// The config's diff_ids are the digests of the decompressed layers.
	var m ocispec.Manifest
	if err := json.Unmarshal(layoutBlob(t, dir, desc.Digest), &m); err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(layoutBlob(t, dir, m.Config.Digest), &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.RootFS.DiffIDs) != 3 || len(m.Layers) != 3 {
		t.Fatalf("manifest has %d layers, config %d diff_ids", len(m.Layers), len(cfg.RootFS.DiffIDs))
	}
	for i, l := range m.Layers {
		data, err := io.ReadAll(decompress(t, l.MediaType, bytes.NewReader(layoutBlob(t, dir, l.Digest))))
		if err != nil {
			t.Fatal(err)
		}
		if digest.FromBytes(data) != cfg.RootFS.DiffIDs[i] {
			t.Errorf("layer %d (%s): diff_id %s, decompressed digest %s", i, l.MediaType, cfg.RootFS.DiffIDs[i], digest.FromBytes(data))
		}
	}
	if cfg.OS != "linux" || cfg.Architecture != "amd64" || cfg.Config.User != "1000:1000" || cfg.Config.WorkingDir != "/app" {
		t.Fatalf("config: %+v", cfg)
	}

	// skopeo reads it, and copies it (checking every blob digest).
	var inspect struct {
		Digest       digest.Digest
		Layers       []digest.Digest
		Architecture string
		Env          []string
	}
	if err := json.Unmarshal(images.Skopeo(t, "inspect", "oci:"+dir+":v1"), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != desc.Digest || len(inspect.Layers) != 3 || inspect.Layers[1] != img.Layers[1].Digest || inspect.Architecture != "amd64" {
		t.Fatalf("skopeo inspect: %+v", inspect)
	}
	out := t.TempDir()
	images.Skopeo(t, "copy", "--quiet", "--preserve-digests", "oci:"+dir+":v1", "oci:"+out+":copy")
	images.Skopeo(t, "copy", "--quiet", "oci:"+dir+":small", "oci:"+out+":small")
	if b := layoutBlob(t, out, desc.Digest); digest.FromBytes(b) != desc.Digest {
		t.Fatalf("copied manifest differs")
	}
}

func TestPushAndPullBack(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})
	for _, c := range []images.Compression{images.Gzip, images.Zstd, images.Uncompressed} {
		img := images.Image{
			Layers: []images.Layer{
				images.NewLayer(t, c, images.Dir("etc"), images.File("etc/compression", c.String())),
				images.NewLayer(t, c, images.File("etc/second", "2")),
			},
			Config: images.Config{Cmd: []string{"/bin/true"}},
		}
		ref := images.Push(t, img, r, "test/push:"+c.String())
		if ref.String() != r.Host+"/test/push:"+c.String() || !strings.HasPrefix(ref.Digested(), r.Host+"/test/push@sha256:") {
			t.Fatalf("ref %s / %s", ref, ref.Digested())
		}
		dir := t.TempDir()
		images.Skopeo(t, append(append([]string{"copy", "--quiet", "--preserve-digests"}, r.SkopeoFlags("src")...),
			ref.Docker(), "oci:"+dir+":back")...)
		blobs, err := img.Blobs()
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range blobs {
			if got := layoutBlob(t, dir, b.Digest); !bytes.Equal(got, b.Data) {
				t.Errorf("%s: blob %s (%s) changed through the registry", c, b.Digest, b.MediaType)
			}
		}
	}
	// Docker schema 2 media types push and come back as such.
	dimg := images.Busybox(t)
	dimg.Docker = true
	ref := images.Push(t, dimg, r, "test/docker:v1")
	raw := images.Skopeo(t, append(append([]string{"inspect", "--raw"}, r.SkopeoFlags("")...), ref.Docker())...)
	var m ocispec.Manifest
	if err := json.Unmarshal(raw, &m); err != nil || m.MediaType != images.MediaTypeDockerManifest ||
		m.Config.MediaType != images.MediaTypeDockerConfig || m.Layers[0].MediaType != images.MediaTypeDockerLayerGzip {
		t.Fatalf("docker manifest: %v %s", err, raw)
	}
	// And so does a Docker manifest list.
	darm := dimg
	darm.Platform = ocispec.Platform{OS: "linux", Architecture: "arm64"}
	darm.Config.Labels = map[string]string{"arch": "arm64"}
	lref := images.Push(t, images.Index{Docker: true, Images: []images.Image{dimg, darm}}, r, "test/docker:list")
	raw = images.Skopeo(t, append(append([]string{"inspect", "--raw"}, r.SkopeoFlags("")...), lref.Docker())...)
	var list ocispec.Index
	if err := json.Unmarshal(raw, &list); err != nil || list.MediaType != images.MediaTypeDockerManifestList ||
		len(list.Manifests) != 2 || list.Manifests[0].MediaType != images.MediaTypeDockerManifest {
		t.Fatalf("docker manifest list: %v %s", err, raw)
	}
	armDesc, _ := darm.Descriptor()
	if b := fetch(t, r, "/v2/test/docker/manifests/"+armDesc.Digest.String()); digest.FromBytes(b) != armDesc.Digest {
		t.Fatalf("arm64 instance of the list not in the registry")
	}
}

func TestMultiArchIndex(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{TLS: true, Htpasswd: map[string]string{"u": "p"}})
	mk := func(arch, variant string) images.Image {
		return images.Image{
			Layers:   []images.Layer{images.NewLayer(t, images.Gzip, images.Dir("etc"), images.File("etc/arch", arch+variant))},
			Platform: ocispec.Platform{OS: "linux", Architecture: arch, Variant: variant},
		}
	}
	amd, arm := mk("amd64", ""), mk("arm64", "v8")
	ix := images.Index{Images: []images.Image{amd, arm}}
	ref := images.Push(t, ix, r, "test/multi:v1")

	raw := images.Skopeo(t, append(append([]string{"inspect", "--raw"}, r.SkopeoFlags("")...), ref.Docker())...)
	var idx ocispec.Index
	if err := json.Unmarshal(raw, &idx); err != nil || digest.FromBytes(raw) != ref.Digest || idx.MediaType != ocispec.MediaTypeImageIndex {
		t.Fatalf("index in registry: %v, digest %s want %s: %s", err, digest.FromBytes(raw), ref.Digest, raw)
	}
	if len(idx.Manifests) != 2 || idx.Manifests[1].Platform == nil || idx.Manifests[1].Platform.Architecture != "arm64" ||
		idx.Manifests[1].Platform.Variant != "v8" {
		t.Fatalf("index manifests: %+v", idx.Manifests)
	}
	// Selecting a platform gives that platform's image.
	for _, tc := range []struct {
		arch, variant string
		img           images.Image
	}{{"amd64", "", amd}, {"arm64", "v8", arm}} {
		args := []string{"--override-arch", tc.arch}
		if tc.variant != "" {
			args = append(args, "--override-variant", tc.variant)
		}
		dir := t.TempDir()
		args = append(append(append(args, "copy", "--quiet"), r.SkopeoFlags("src")...), ref.Docker(), "oci:"+dir+":sel")
		images.Skopeo(t, args...)
		want, _ := tc.img.Descriptor()
		var got ocispec.Index
		if b, err := os.ReadFile(filepath.Join(dir, "index.json")); err != nil || json.Unmarshal(b, &got) != nil {
			t.Fatalf("%s: read copied index.json: %v", tc.arch, err)
		}
		if len(got.Manifests) != 1 || got.Manifests[0].Digest != want.Digest {
			t.Errorf("%s selected %+v, want manifest %s", tc.arch, got.Manifests, want.Digest)
		}
		resp := fetch(t, r, "/v2/test/multi/manifests/"+want.Digest.String())
		if digest.FromBytes(resp) != want.Digest {
			t.Errorf("%s manifest by digest: %s", tc.arch, digest.FromBytes(resp))
		}
	}
}

// fetch GETs path from the registry with credentials and an Accept header
// for all manifest types, failing unless it answers 200.
func fetch(t testing.TB, r registry.Target, path string) []byte {
	t.Helper()
	e := r.Addr()
	req, err := http.NewRequest(http.MethodGet, e.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex,
		images.MediaTypeDockerManifest, images.MediaTypeDockerManifestList}, ", "))
	e.SetAuth(req)
	resp, err := e.Client().Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %v %s: %s", path, err, resp.Status, b)
	}
	return b
}

func TestRawPushOfHostileImages(t *testing.T) {
	t.Parallel()
	r := registry.Start(t, registry.Options{})

	// A config whose diff_id does not match its layer.
	good := images.NewLayer(t, images.Gzip, images.File("hello", "hello\n"))
	liar := images.Image{Layers: []images.Layer{good}, DiffIDs: []digest.Digest{digest.FromString("something else")}}
	ref := images.PushRaw(t, liar, r, "test/hostile:diffid")
	m := fetch(t, r, "/v2/test/hostile/manifests/diffid")
	if digest.FromBytes(m) != ref.Digest {
		t.Fatalf("manifest in registry: digest %s, want %s", digest.FromBytes(m), ref.Digest)
	}
	var mf ocispec.Manifest
	if err := json.Unmarshal(m, &mf); err != nil {
		t.Fatal(err)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(fetch(t, r, "/v2/test/hostile/blobs/"+mf.Config.Digest.String()), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.RootFS.DiffIDs[0] == good.DiffID || cfg.RootFS.DiffIDs[0] != digest.FromString("something else") {
		t.Fatalf("hostile config diff_ids: %v (real %s)", cfg.RootFS.DiffIDs, good.DiffID)
	}

	// A layer that is a malicious tar: path traversal, an absolute path, a
	// symlink to / followed by a file through it, a hardlink out of the
	// rootfs, and a device node.
	evil := images.NewLayer(t, images.Gzip,
		images.File("../../../tmp/escaped", "pwned"),
		images.File("/etc/absolute", "pwned"),
		images.Symlink("link", "/"),
		images.File("link/etc/through-symlink", "pwned"),
		images.Hardlink("shadow", "/etc/shadow"),
		images.Entry{Name: "dev/mem", Kind: images.KindCharDev, Devmajor: 1, Devminor: 1},
	)
	eref := images.PushRaw(t, images.Image{Layers: []images.Layer{evil}}, r, "test/hostile:evil-tar")
	blob := fetch(t, r, "/v2/test/hostile/blobs/"+evil.Digest.String())
	names := []string{}
	for _, e := range readTar(t, decompress(t, evil.MediaType, bytes.NewReader(blob))) {
		names = append(names, e.name+">"+e.link)
	}
	if got := strings.Join(names, " "); got != "../../../tmp/escaped> /etc/absolute> link>/ link/etc/through-symlink> shadow>/etc/shadow dev/mem>" {
		t.Fatalf("malicious tar from the registry: %s", got)
	}
	if _, err := os.Stat("/tmp/escaped"); err == nil {
		t.Fatalf("building or pushing the hostile layer wrote /tmp/escaped")
	}
	// skopeo can still read the manifest: the registry stored it as is.
	out := images.Skopeo(t, "inspect", "--raw", "--tls-verify=false", eref.Docker())
	if digest.FromBytes(out) != eref.Digest {
		t.Fatalf("skopeo inspect of the hostile image: %s", out)
	}

	// A layer that is not a tar at all, and a hand-written manifest.
	junk := images.RawLayer(ocispec.MediaTypeImageLayerGzip, []byte("not gzip, not tar"), digest.FromString("lie"))
	cfgBlob := images.NewBlob(ocispec.MediaTypeImageConfig, []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["`+digest.FromString("lie").String()+`"]}}`))
	body := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` +
		mustJSON(t, cfgBlob.Descriptor()) + `,"layers":[` + mustJSON(t, junk.Descriptor()) + `]}`)
	jref := images.PushRaw(t, images.RawManifest{MediaType: ocispec.MediaTypeImageManifest, Body: body,
		Refs: []images.Blob{junk.Blob, cfgBlob}}, r, "test/hostile:junk")
	if got := fetch(t, r, "/v2/test/hostile/manifests/"+jref.Digest.String()); !bytes.Equal(got, body) {
		t.Fatalf("hand-written manifest changed in the registry: %s", got)
	}
	if got := fetch(t, r, "/v2/test/hostile/blobs/"+junk.Digest.String()); string(got) != "not gzip, not tar" {
		t.Fatalf("junk layer: %q", got)
	}
	// A blob pushed on its own.
	if d := images.PushBlob(t, r, "test/hostile", []byte("loose")); string(fetch(t, r, "/v2/test/hostile/blobs/"+d.String())) != "loose" {
		t.Fatalf("loose blob %s not served", d)
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBusybox(t *testing.T) {
	t.Parallel()
	img := images.Busybox(t)
	if len(img.Layers) != 1 || img.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("busybox image: %+v", img.Config)
	}
	files := map[string]entry{}
	for _, e := range readTar(t, bytes.NewReader(layerTar(t, img.Layers[0]))) {
		files[e.name] = e
	}
	for _, a := range []string{"sh", "ls", "cat", "echo", "id", "env", "mount", "sha256sum"} {
		if e := files["bin/"+a]; e.typ != tar.TypeSymlink || e.link != "busybox" {
			t.Errorf("bin/%s: %+v, want a symlink to busybox", a, e)
		}
	}
	if e := files["tmp"]; e.typ != tar.TypeDir || e.mode != 0o1777 {
		t.Errorf("tmp: %+v", e)
	}
	if !strings.Contains(files["etc/passwd"].content, "root:x:0:0:") || !strings.Contains(files["etc/group"].content, "guest:x:1000:") {
		t.Errorf("etc/passwd %q, etc/group %q", files["etc/passwd"].content, files["etc/group"].content)
	}
	// The shell in the image really runs, through its applet symlink.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), []byte(files["bin/busybox"].content), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(dir, "bin/sh"), "-c", "echo hello from $0").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hello from ") {
		t.Fatalf("image's /bin/sh: %v: %s", err, out)
	}
	if again := images.Busybox(t); again.Layers[0].Digest != img.Layers[0].Digest {
		t.Fatalf("busybox layer is not reproducible")
	}
}

func TestBig(t *testing.T) {
	t.Parallel()
	const size = 8 << 20
	img := images.Big(t, 2, size)
	if len(img.Layers) != 2 || img.Layers[0].Digest == img.Layers[1].Digest {
		t.Fatalf("big image layers: %+v", img.Layers)
	}
	for i, l := range img.Layers {
		if l.Path == "" || l.Data != nil {
			t.Fatalf("layer %d is held in memory", i)
		}
		st, err := os.Stat(l.Path)
		if err != nil || st.Size() != l.Size {
			t.Fatalf("layer %d file: %v, size %d want %d", i, err, st.Size(), l.Size)
		}
		// Incompressible: gzip cannot shrink it.
		if l.Size < size {
			t.Errorf("layer %d compressed to %d bytes from %d: data is compressible", i, l.Size, size)
		}
		es := readTar(t, bytes.NewReader(layerTar(t, l)))
		if len(es) != 2 || int64(len(es[1].content)) != size {
			t.Fatalf("layer %d tar: %d entries", i, len(es))
		}
		blob, err := l.Bytes()
		if err != nil || digest.FromBytes(blob) != l.Digest {
			t.Fatalf("layer %d blob digest: %v", i, err)
		}
	}
	// Same arguments, same image.
	again := images.Big(t, 2, size)
	d1, _ := img.Descriptor()
	d2, _ := again.Descriptor()
	if d1.Digest != d2.Digest {
		t.Fatalf("big image is not reproducible: %s then %s", d1.Digest, d2.Digest)
	}
	r := registry.Start(t, registry.Options{})
	ref := images.Push(t, img, r, "test/big:v1")
	var inspect struct{ Layers []digest.Digest }
	if err := json.Unmarshal(images.Skopeo(t, "inspect", "--tls-verify=false", ref.Docker()), &inspect); err != nil ||
		len(inspect.Layers) != 2 || inspect.Layers[1] != img.Layers[1].Digest {
		t.Fatalf("big image in the registry: %v %+v", err, inspect)
	}
}

func BenchmarkBigLayer(b *testing.B) {
	const size = 64 << 20
	dir := b.TempDir()
	b.SetBytes(size)
	for i := 0; i < b.N; i++ {
		l, err := images.WriteBigLayer(dir, uint64(i), size, images.Gzip)
		if err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(l.Path); err != nil {
			b.Fatal(err)
		}
	}
}
