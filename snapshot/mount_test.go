package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
)

func TestMountShowsMergedLayers(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"etc/os": "base", "bin/sh": "shell", "keep": "base"})
	ensure(t, s, id("app"), id("base"), map[string]string{"etc/os": "app", "app/main": "main"})
	bundle := newBundle(t)
	rootfs := mountAt(t, s, id("app"), bundle)

	if !isMounted(t, rootfs) {
		t.Fatal("rootfs is not a mount point")
	}
	ms, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(rootfs))
	if err != nil || len(ms) != 1 || ms[0].FSType != "overlay" {
		t.Fatalf("mount at rootfs: %+v, %v; want one overlay", ms, err)
	}
	for name, want := range map[string]string{
		"etc/os":   "app", // the upper layer shadows the lower one
		"bin/sh":   "shell",
		"keep":     "base",
		"app/main": "main",
	} {
		if got := readFile(t, filepath.Join(rootfs, name)); got != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
	// The bundle's upper is private and outside the bundle.
	if got := overlayOption(ms[0].VFSOptions, "upperdir"); got != s.upperDir(bundleID(t, s, bundle)) {
		t.Errorf("upperdir = %q, want %q", got, s.upperDir(bundleID(t, s, bundle)))
	}
}

func TestMountBundlesSharingLayersAreIsolated(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"shared": "orig", "gone": "here"})
	b1, b2 := newBundle(t), newBundle(t)
	r1, r2 := mountAt(t, s, id("base"), b1), mountAt(t, s, id("base"), b2)

	if err := os.WriteFile(filepath.Join(r1, "new"), []byte("b1"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r1, "shared"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(r1, "gone")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(r1, "shared")); got != "changed" {
		t.Errorf("b1 shared = %q", got)
	}
	if exists(filepath.Join(r2, "new")) {
		t.Error("b1's new file is visible in b2")
	}
	if got := readFile(t, filepath.Join(r2, "shared")); got != "orig" {
		t.Errorf("b2 shared = %q, want orig", got)
	}
	if !exists(filepath.Join(r2, "gone")) {
		t.Error("b1's delete is visible in b2")
	}
	layer := s.layerDir(layerID(t, s, id("base")))
	if got := readFile(t, filepath.Join(layer, "shared")); got != "orig" || !exists(filepath.Join(layer, "gone")) || exists(filepath.Join(layer, "new")) {
		t.Error("writes through a bundle reached the layer")
	}
	if got := readFile(t, filepath.Join(s.upperDir(bundleID(t, s, b1)), "new")); got != "b1" {
		t.Errorf("b1's write is not in its upper dir: %q", got)
	}
}

func TestMount128Layers(t *testing.T) {
	const n = 128
	// A long root makes sure the absolute lowerdir list exceeds a page.
	root := filepath.Join(t.TempDir(), "a-store-root-with-a-rather-long-name-to-make-long-paths")
	s := openStoreAt(t, root)
	var parent digest.Digest
	for i := 1; i <= n; i++ {
		m := map[string]string{fmt.Sprintf("files/f%03d", i): strconv.Itoa(i)}
		switch i {
		case 1:
			m["shadowed"] = "bottom"
		case n:
			m["shadowed"] = "top"
		}
		chainID := id(fmt.Sprintf("layer-%d", i))
		ensure(t, s, chainID, parent, m)
		parent = chainID
	}
	var long []string
	for i := 1; i <= n; i++ {
		long = append(long, s.layerDir(layerID(t, s, id(fmt.Sprintf("layer-%d", i)))))
	}
	if l := len("lowerdir=" + strings.Join(long, ":")); l <= 4096 {
		t.Fatalf("test precondition: absolute lowerdir option is only %d bytes", l)
	}

	bundle := newBundle(t)
	rootfs := mountAt(t, s, parent, bundle)
	for i := 1; i <= n; i++ {
		if got := readFile(t, filepath.Join(rootfs, fmt.Sprintf("files/f%03d", i))); got != strconv.Itoa(i) {
			t.Fatalf("f%03d = %q", i, got)
		}
	}
	if got := names(t, filepath.Join(rootfs, "files")); len(got) != n {
		t.Errorf("%d files visible, want %d", len(got), n)
	}
	if got := readFile(t, filepath.Join(rootfs, "shadowed")); got != "top" {
		t.Errorf("shadowed = %q, want the top layer's", got)
	}
	// And a bundle write shadows every layer.
	if err := os.WriteFile(filepath.Join(rootfs, "files/f001"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(rootfs, "files/f001")); got != "mine" {
		t.Errorf("after write f001 = %q", got)
	}
	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, rootfs) {
		t.Error("still mounted after Remove")
	}
	if got, err := s.GC(context.Background()); err != nil || got != n {
		t.Errorf("GC = %d, %v; want %d", got, err, n)
	}
}

func TestMountErrors(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"f": "x"})
	mounted := newBundle(t)
	mountAt(t, s, id("base"), mounted)

	tests := []struct {
		name   string
		top    digest.Digest
		bundle func(t *testing.T) string
		is     error
		substr string
	}{
		{name: "invalid top", top: "sha256:short", bundle: func(t *testing.T) string { return newBundle(t) }, substr: "invalid"},
		{name: "unknown top", top: id("absent"), bundle: func(t *testing.T) string { return newBundle(t) }, is: ErrNotFound},
		{name: "missing bundle", top: id("base"), bundle: func(t *testing.T) string { return filepath.Join(t.TempDir(), "nope") }, is: os.ErrNotExist},
		{name: "bundle is a file", top: id("base"), bundle: func(t *testing.T) string {
			p := filepath.Join(t.TempDir(), "file")
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			return p
		}, substr: "not a directory"},
		{name: "empty bundle path", top: id("base"), bundle: func(*testing.T) string { return "" }, substr: "empty bundle"},
		{name: "mounted twice", top: id("base"), bundle: func(*testing.T) string { return mounted }, is: ErrExists},
		{name: "mounted twice, unclean path", top: id("base"), bundle: func(*testing.T) string { return mounted + "/./" }, is: ErrExists},
		{name: "rootfs not empty", top: id("base"), bundle: func(t *testing.T) string {
			b := newBundle(t)
			if err := os.MkdirAll(filepath.Join(b, "rootfs", "x"), 0o755); err != nil {
				t.Fatal(err)
			}
			return b
		}, substr: "not empty"},
		{name: "rootfs is a symlink", top: id("base"), bundle: func(t *testing.T) string {
			b := newBundle(t)
			if err := os.Symlink(t.TempDir(), filepath.Join(b, "rootfs")); err != nil {
				t.Fatal(err)
			}
			return b
		}, substr: "not a directory"},
		{name: "rootfs already a mount point", top: id("base"), bundle: func(t *testing.T) string {
			other := openStore(t) // opened first: closed after the unmount
			ensure(t, other, id("base"), "", nil)
			b := newBundle(t)
			mountAt(t, other, id("base"), b)
			return b
		}, substr: "already a mount point"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := tt.bundle(t)
			err := s.Mount(context.Background(), tt.top, bundle)
			if err == nil {
				t.Fatal("Mount succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not mention %q", err, tt.substr)
			}
		})
	}
	// Nothing of the failures remains: one bundle, one record, one upper.
	if n := names(t, filepath.Join(s.root, dirOverlay)); len(n) != 1 {
		t.Errorf("overlay/ = %v, want only the mounted bundle", n)
	}
	if n := names(t, filepath.Join(s.root, dirMeta, dirBundles)); len(n) != 1 {
		t.Errorf("meta/bundles/ = %v, want one record", n)
	}
	s.mu.Lock()
	refs := s.layers[id("base")].refs
	s.mu.Unlock()
	if refs != 1 {
		t.Errorf("base layer refs = %d, want 1 (the mounted bundle)", refs)
	}
}

func TestMountFailureCleansUp(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", nil)
	// Make the overlay mount itself fail: its layer dir vanished.
	if err := os.RemoveAll(s.layerDir(layerID(t, s, id("base")))); err != nil {
		t.Fatal(err)
	}
	bundle := newBundle(t)
	if err := s.Mount(context.Background(), id("base"), bundle); err == nil {
		t.Fatal("Mount of a missing lowerdir succeeded")
	}
	if exists(filepath.Join(bundle, rootfsName)) {
		t.Error("failed Mount left the rootfs it created")
	}
	if n := names(t, filepath.Join(s.root, dirOverlay)); len(n) != 0 {
		t.Errorf("overlay/ = %v after a failed Mount", n)
	}
	if n := names(t, filepath.Join(s.root, dirMeta, dirBundles)); len(n) != 0 {
		t.Errorf("meta/bundles/ = %v after a failed Mount", n)
	}
	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Errorf("Remove after failed Mount: %v", err)
	}
}

func TestMountPermissions(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"f": "x"})
	bundle := newBundle(t)
	rootfs := mountAt(t, s, id("base"), bundle)
	b := bundleID(t, s, bundle)
	for _, tt := range []struct {
		path string
		perm os.FileMode
	}{
		{s.root, 0o700},
		{filepath.Join(s.root, dirLayers), 0o700},
		{s.layerDir(layerID(t, s, id("base"))), 0o700},
		{filepath.Join(s.root, dirOverlay), 0o700},
		{s.bundleDir(b), 0o700},
		{s.upperDir(b), 0o755}, // becomes the container's "/"
		{s.workDir(b), 0o700},
		{filepath.Join(s.root, dirMeta), 0o700},
		{filepath.Join(s.root, dirTmp), 0o700},
		{rootfs, 0o755},
	} {
		fi, err := os.Stat(tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != tt.perm {
			t.Errorf("%s: mode %o, want %o", tt.path, got, tt.perm)
		}
	}
}

func TestRemove(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"f": "x"})
	bundle := newBundle(t)
	rootfs := mountAt(t, s, id("base"), bundle)
	b := bundleID(t, s, bundle)
	if err := os.WriteFile(filepath.Join(bundle, configName), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "kata-file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "written"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, rootfs) {
		t.Error("rootfs still mounted")
	}
	for _, p := range []string{rootfs, filepath.Join(bundle, configName), s.bundleDir(b), s.bundleRecord(b)} {
		if exists(p) {
			t.Errorf("%s remains after Remove", p)
		}
	}
	if !exists(filepath.Join(bundle, "kata-file")) {
		t.Error("Remove deleted a file it does not own")
	}
	if !s.HasLayer(id("base")) {
		t.Error("Remove deleted the layer (only GC does)")
	}
	// Idempotent, and the bundle can be mounted again.
	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Errorf("second Remove: %v", err)
	}
	if err := s.Remove(context.Background(), newBundle(t)); err != nil {
		t.Errorf("Remove of an unknown bundle: %v", err)
	}
	rootfs = mountAt(t, s, id("base"), bundle)
	if exists(filepath.Join(rootfs, "written")) {
		t.Error("a new mount of the bundle sees the old mount's writes")
	}
}

func TestRemoveBusyMountDetachesLazily(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", map[string]string{"f": "content"})
	bundle := newBundle(t)
	rootfs := mountAt(t, s, id("base"), bundle)
	f, err := os.Open(filepath.Join(rootfs, "f")) // keeps the mount busy
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Fatalf("Remove of a busy mount: %v", err)
	}
	if isMounted(t, rootfs) {
		t.Error("busy rootfs still mounted")
	}
	buf := make([]byte, 16)
	if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "content" {
		t.Errorf("open file after lazy detach: %q, %v", buf[:n], err)
	}
	// The detached overlay may still read its lowers: GC keeps them.
	if got, err := s.GC(context.Background()); err != nil || got != 0 {
		t.Errorf("GC = %d, %v; want 0 while a detached mount may use the layer", got, err)
	}
	if !s.HasLayer(id("base")) {
		t.Error("layer of a lazily detached mount was collected")
	}
}
