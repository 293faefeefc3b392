package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// checkConsistent asserts the store's invariants: every layer has its
// directory and record, its parent is in the store, and layers/ and
// meta/layers/ hold nothing else.
func checkConsistent(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var dirs, recs []string
	for chainID, l := range s.layers {
		if l.refs < 0 {
			t.Errorf("layer %s: refs %d", chainID, l.refs)
		}
		if l.parent != nil && s.layers[l.parent.chainID] != l.parent {
			t.Errorf("layer %s: parent %s not in store", chainID, l.parent.chainID)
		}
		rec := new(layerRecord)
		if err := readRecord(s.layerRecord(l.id), rec); err != nil || rec.ChainID != chainID || rec.Parent != l.parentID() {
			t.Errorf("layer %s: record %+v, %v", chainID, rec, err)
		}
		dirs = append(dirs, strconv.FormatUint(l.id, 10))
		recs = append(recs, recordName(l.id))
	}
	slices.Sort(dirs)
	slices.Sort(recs)
	if got := names(t, filepath.Join(s.root, dirLayers)); !slices.Equal(got, dirs) {
		t.Errorf("layers/ = %v, want %v", got, dirs)
	}
	if got := names(t, filepath.Join(s.root, dirMeta, dirLayers)); !slices.Equal(got, recs) {
		t.Errorf("meta/layers/ = %v, want %v", got, recs)
	}
}

func TestGCRemovesOnlyUnreferencedLayers(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("a"), "", map[string]string{"a": "1"})
	ensure(t, s, id("b"), id("a"), map[string]string{"b": "1"})
	ensure(t, s, id("c"), id("b"), map[string]string{"c": "1"})
	ensure(t, s, id("d"), id("a"), map[string]string{"d": "1"}) // sibling branch
	ensure(t, s, id("e"), "", map[string]string{"e": "1"})      // other image
	bundle := newBundle(t)
	rootfs := mountAt(t, s, id("c"), bundle)

	got, err := s.GC(context.Background())
	if err != nil || got != 2 {
		t.Fatalf("GC = %d, %v; want 2 (d and e)", got, err)
	}
	for name, want := range map[string]bool{"a": true, "b": true, "c": true, "d": false, "e": false} {
		if s.HasLayer(id(name)) != want {
			t.Errorf("HasLayer(%s) = %v, want %v", name, !want, want)
		}
	}
	checkConsistent(t, s)
	if n := names(t, filepath.Join(s.root, dirTmp)); len(n) != 0 {
		t.Errorf("tmp/ after GC: %v", n)
	}
	if got := readFile(t, filepath.Join(rootfs, "a")); got != "1" {
		t.Errorf("mounted bundle after GC: a = %q", got)
	}
	if got, err := s.GC(context.Background()); err != nil || got != 0 {
		t.Errorf("second GC = %d, %v; want 0", got, err)
	}

	if err := s.Remove(context.Background(), bundle); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GC(context.Background()); err != nil || got != 3 {
		t.Errorf("GC after Remove = %d, %v; want 3", got, err)
	}
	checkConsistent(t, s)
	if n := names(t, filepath.Join(s.root, dirLayers)); len(n) != 0 {
		t.Errorf("layers/ = %v after collecting everything", n)
	}
	// A collected layer can be made again.
	ensure(t, s, id("a"), "", map[string]string{"a": "2"})
	checkConsistent(t, s)
}

func TestGCSparesParentsOfEnsureLayerInProgress(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("a"), "", map[string]string{"a": "1"})
	ensure(t, s, id("b"), id("a"), map[string]string{"b": "1"})
	inApply, release := make(chan []string), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.EnsureLayer(context.Background(), id("c"), id("b"), func(_ context.Context, _ string, parents []string) error {
			inApply <- parents
			<-release
			for _, p := range parents { // still there after the GC
				if _, err := os.Stat(p); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	defer func() {
		select {
		case <-release:
		default:
			close(release) // a failing test must not leave apply blocked
		}
	}()
	var parents []string
	select {
	case parents = <-inApply:
	case err := <-done:
		t.Fatalf("EnsureLayer returned before apply: %v", err)
	}
	got, err := s.GC(context.Background())
	if err != nil || got != 0 {
		t.Errorf("GC during EnsureLayer = %d, %v; want 0", got, err)
	}
	for _, p := range parents {
		if !exists(p) {
			t.Errorf("parent dir %s deleted while in use", p)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := s.GC(context.Background()); err != nil || got != 3 {
		t.Errorf("GC afterwards = %d, %v; want 3", got, err)
	}
}

func TestGCRacingMount(t *testing.T) {
	s := openStore(t)
	for i := range 20 {
		ensure(t, s, id("a"), "", map[string]string{"f": "x"})
		bundle := newBundle(t)
		var mountErr, gcErr error
		var wg sync.WaitGroup
		wg.Go(func() { mountErr = s.Mount(context.Background(), id("a"), bundle) })
		wg.Go(func() { _, gcErr = s.GC(context.Background()) })
		wg.Wait()
		if gcErr != nil {
			t.Fatalf("round %d: GC: %v", i, gcErr)
		}
		switch {
		case mountErr == nil:
			// The mount won: the layer must have survived the GC.
			if !s.HasLayer(id("a")) {
				t.Fatalf("round %d: layer of a mounted bundle collected", i)
			}
			if got := readFile(t, filepath.Join(bundle, rootfsName, "f")); got != "x" {
				t.Fatalf("round %d: f = %q", i, got)
			}
			if err := s.Remove(context.Background(), bundle); err != nil {
				t.Fatal(err)
			}
		case errors.Is(mountErr, ErrNotFound):
			// The GC won, cleanly.
		default:
			t.Fatalf("round %d: Mount: %v", i, mountErr)
		}
		checkConsistent(t, s)
	}
}

func TestGCRacingEnsureLayerChains(t *testing.T) {
	s := openStore(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Go(func() {
			var parent digest.Digest
			for i := range 8 {
				chainID := id(fmt.Sprintf("g%d-l%d", g, i))
				err := s.EnsureLayer(context.Background(), chainID, parent, files(map[string]string{"f": chainID.String()}))
				if errors.Is(err, ErrNotFound) { // parent collected in between: start over
					parent = ""
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				parent = chainID
			}
		})
	}
	wg.Go(func() {
		for range 50 {
			if _, err := s.GC(context.Background()); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkConsistent(t, s)
}

func TestOpenRecoversFromCrash(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s1, err := Open(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	ensure(t, s1, id("a"), "", map[string]string{"a": "1"})
	ensure(t, s1, id("b"), id("a"), map[string]string{"b": "1"})
	ensure(t, s1, id("c"), id("a"), map[string]string{"c": "1"})
	live, gone := newBundle(t), newBundle(t)
	liveRootfs := mountAt(t, s1, id("b"), live)
	goneRootfs := mountAt(t, s1, id("c"), gone)
	liveID, goneID := bundleID(t, s1, live), bundleID(t, s1, gone)
	// The guest "rebooted" under the second bundle: its mount is gone.
	if err := unix.Unmount(goneRootfs, 0); err != nil {
		t.Fatal(err)
	}
	// The process dies (Close only drops the lock; it touches nothing).
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	// What a crash leaves behind.
	mkdir := func(p string) {
		t.Helper()
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p string, v any) {
		t.Helper()
		data, ok := v.([]byte)
		if !ok {
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mkdir(filepath.Join(root, "tmp", "layer-123", "usr"))                    // half-applied layer
	write(filepath.Join(root, "tmp", "record-456"), []byte(`{"version":1,`)) // half-written record
	mkdir(filepath.Join(root, "layers", "999", "etc"))                       // renamed, never recorded
	mkdir(filepath.Join(root, "layers", "junk"))
	write(filepath.Join(root, "meta", "layers", "998.json"), // record without its dir
		layerRecord{Version: 1, ID: 998, ChainID: id("x")})
	mkdir(filepath.Join(root, "layers", "997")) // parent chain broken
	write(filepath.Join(root, "meta", "layers", "997.json"),
		layerRecord{Version: 1, ID: 997, ChainID: id("y"), Parent: id("absent")})
	mkdir(filepath.Join(root, "layers", "996")) // unreadable record
	write(filepath.Join(root, "meta", "layers", "996.json"), []byte("{not json"))
	mkdir(filepath.Join(root, "overlay", "500", "upper")) // bundle dir without record
	otherBundle := newBundle(t)                           // record written, never mounted
	write(filepath.Join(root, "meta", "bundles", "501.json"),
		bundleRecord{Version: 1, ID: 501, Bundle: otherBundle, Rootfs: filepath.Join(otherBundle, "rootfs"), Top: id("a")})
	mkdir(filepath.Join(root, "overlay", "501", "upper"))

	s2 := openStoreAt(t, root)
	if n := names(t, filepath.Join(root, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ = %v after Open", n)
	}
	for name, want := range map[string]bool{"a": true, "b": true, "c": true, "x": false, "y": false} {
		if s2.HasLayer(id(name)) != want {
			t.Errorf("HasLayer(%s) = %v, want %v", name, !want, want)
		}
	}
	checkConsistent(t, s2) // 996-999 and junk are gone

	// The still-mounted bundle was kept; the others were cleaned.
	if got := names(t, filepath.Join(root, "overlay")); !slices.Equal(got, []string{strconv.FormatUint(liveID, 10)}) {
		t.Errorf("overlay/ = %v, want only the live bundle %d", got, liveID)
	}
	if got := names(t, filepath.Join(root, "meta", "bundles")); !slices.Equal(got, []string{recordName(liveID)}) {
		t.Errorf("meta/bundles/ = %v, want only %s", got, recordName(liveID))
	}
	if exists(s2.bundleDir(goneID)) || !exists(goneRootfs) {
		t.Error("Open should drop the stale bundle's upper dir but leave its bundle directory alone")
	}
	if got := readFile(t, filepath.Join(liveRootfs, "b")); got != "1" {
		t.Errorf("live bundle: b = %q", got)
	}
	if err := s2.Mount(context.Background(), id("b"), live); !errors.Is(err, ErrExists) {
		t.Errorf("Mount of the live bundle again: %v, want ErrExists", err)
	}
	if err := s2.Remove(context.Background(), gone); err != nil {
		t.Errorf("Remove of the forgotten bundle: %v", err)
	}
	// The live bundle still references a and b.
	if got, err := s2.GC(context.Background()); err != nil || got != 1 {
		t.Errorf("GC = %d, %v; want 1 (c)", got, err)
	}
	// New numbers continue after the largest seen.
	ensure(t, s2, id("new"), "", nil)
	if n := layerID(t, s2, id("new")); n <= 999 {
		t.Errorf("new layer got number %d, want > 999", n)
	}
	if err := s2.Remove(context.Background(), live); err != nil {
		t.Fatal(err)
	}
	if isMounted(t, liveRootfs) || exists(s2.bundleDir(liveID)) {
		t.Error("Remove after re-Open left the mount or its dirs")
	}
	if got, err := s2.GC(context.Background()); err != nil || got != 3 {
		t.Errorf("GC after Remove = %d, %v; want 3", got, err)
	}
}

func TestOpenFindsExistingLayers(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s1, err := Open(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	ensure(t, s1, id("a"), "", map[string]string{"f": "x"})
	ensure(t, s1, id("b"), id("a"), nil)
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStoreAt(t, root)
	if !s2.HasLayer(id("a")) || !s2.HasLayer(id("b")) {
		t.Fatal("layers not found after re-Open")
	}
	err = s2.EnsureLayer(context.Background(), id("b"), id("a"), func(context.Context, string, []string) error {
		t.Error("apply ran for a layer the store has")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bundle := newBundle(t)
	rootfs := mountAt(t, s2, id("b"), bundle)
	if got := readFile(t, filepath.Join(rootfs, "f")); got != "x" {
		t.Errorf("f = %q", got)
	}
}

func TestOpenIsExclusiveAndCloseEndsUse(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s := openStoreAt(t, root)
	if _, err := Open(context.Background(), root); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Open: %v, want ErrBusy", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	ctx := context.Background()
	for name, err := range map[string]error{
		"EnsureLayer": s.EnsureLayer(ctx, id("a"), "", files(nil)),
		"Mount":       s.Mount(ctx, id("a"), t.TempDir()),
		"Remove":      s.Remove(ctx, t.TempDir()),
		"GC":          func() error { _, err := s.GC(ctx); return err }(),
	} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
	openStoreAt(t, root) // the lock is free again
}

func TestOpenRoot(t *testing.T) {
	base := t.TempDir()
	for _, tt := range []struct {
		name string
		root string
		ok   bool
	}{
		{"new nested", filepath.Join(base, "x", "y"), true},
		{"colon", filepath.Join(base, "a:b"), false},
		{"comma", filepath.Join(base, "a,b"), false},
		{"space", filepath.Join(base, "a b"), false},
		{"empty", "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.root)
			if (err == nil) != tt.ok {
				t.Fatalf("Open(%q) error = %v, want ok=%v", tt.root, err, tt.ok)
			}
			if err != nil {
				return
			}
			defer s.Close()
			fi, err := os.Stat(tt.root)
			if err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("root: %v, %v; want mode 700", fi.Mode(), err)
			}
		})
	}
	t.Run("existing loose root is tightened", func(t *testing.T) {
		root := filepath.Join(base, "loose")
		if err := os.Mkdir(root, 0o755); err != nil {
			t.Fatal(err)
		}
		s := openStoreAt(t, root)
		fi, err := os.Stat(s.root)
		if err != nil || fi.Mode().Perm() != 0o700 {
			t.Errorf("root mode %v, %v; want 700", fi.Mode(), err)
		}
	})
	t.Run("root is a file", func(t *testing.T) {
		p := filepath.Join(base, "file")
		if err := os.WriteFile(p, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(context.Background(), p); err == nil {
			t.Error("Open of a file succeeded")
		}
	})
}
