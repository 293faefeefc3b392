package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// Errors the operations wrap, for errors.Is.
var (
	// ErrNotFound: the layer (a parent or a mount's top) is not in the store.
	ErrNotFound = errors.New("not found")
	// ErrExists: the bundle is already mounted (or being mounted).
	ErrExists = errors.New("already exists")
	// ErrBusy: another Mount or Remove of the bundle is in progress.
	ErrBusy = errors.New("operation in progress")
	// ErrClosed: the Store has been closed.
	ErrClosed = errors.New("store closed")
)

const (
	dirTmp     = "tmp"
	dirLayers  = "layers"
	dirOverlay = "overlay"
	dirMeta    = "meta"
	dirBundles = "bundles"
	lockName   = "lock"
)

// Store is a layer store with its overlay bundle mounts. Create it with
// Open; it is safe for concurrent use.
type Store struct {
	root string // canonical absolute path
	lock *os.File
	ops  sync.WaitGroup // operations that touch the disk; Close waits

	mu         sync.Mutex
	closed     bool
	layers     map[digest.Digest]*layer
	inflight   map[digest.Digest]*call
	bundles    map[string]*bundleInfo // key: absolute, cleaned bundle path
	nextLayer  uint64
	nextBundle uint64
}

// layer is a committed layer. refs counts the mounted bundles and the
// operations in progress whose chain contains it; GC deletes refs == 0.
type layer struct {
	chainID digest.Digest
	parent  *layer // nil for a base layer
	id      uint64
	refs    int
}

func (l *layer) parentID() digest.Digest {
	if l.parent == nil {
		return ""
	}
	return l.parent.chainID
}

// chain returns l and its ancestors, topmost first.
func (l *layer) chain() []*layer {
	var out []*layer
	for c := l; c != nil; c = c.parent {
		out = append(out, c)
	}
	return out
}

func pin(chain []*layer) {
	for _, l := range chain {
		l.refs++
	}
}

func unpin(chain []*layer) {
	for _, l := range chain {
		l.refs--
	}
}

// call is an EnsureLayer in progress; waiters block on done.
type call struct {
	done    chan struct{}
	err     error // set before done is closed
	retry   bool  // err came from the leader's context ending
	waiters int   // guarded by Store.mu; for tests
}

type bundleState int

const (
	bundleMounting bundleState = iota
	bundleMounted
	bundleRemoving
)

type bundleInfo struct {
	path   string // absolute, cleaned: the key callers use
	rootfs string // canonical mount point
	id     uint64
	top    digest.Digest
	chain  []*layer // pinned while the bundle is known
	state  bundleState
}

// Open opens the store rooted at root, creating it if needed, and takes an
// exclusive lock on it (a second Open of the same root fails until Close).
// It removes what a crash left behind and loads the records of the
// existing layers and of the bundles that are still mounted; see the
// package documentation for the exact rules.
func Open(ctx context.Context, root string) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	if root == "" {
		return nil, errors.New("open store: empty root")
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	canon, err := filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", abs, err)
	}
	if err := checkRoot(canon); err != nil {
		return nil, fmt.Errorf("open store %s: %w", canon, err)
	}
	if err := privateDir(canon); err != nil {
		return nil, fmt.Errorf("open store %s: %w", canon, err)
	}
	lock, err := os.OpenFile(filepath.Join(canon, lockName), os.O_RDWR|os.O_CREATE|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: lock: %w", canon, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		_ = lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("open store %s: in use by another Store: %w", canon, ErrBusy)
		}
		return nil, fmt.Errorf("open store %s: lock: %w", canon, err)
	}
	s := &Store{
		root:     canon,
		lock:     lock,
		layers:   make(map[digest.Digest]*layer),
		inflight: make(map[digest.Digest]*call),
		bundles:  make(map[string]*bundleInfo),
	}
	if err := s.recover(); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("open store %s: %w", canon, err)
	}
	return s, nil
}

// Close waits for the operations in progress and releases the store's
// lock. It does not unmount anything: mounted bundles stay mounted and
// are found again by the next Open. Other methods fail with ErrClosed
// afterwards.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.ops.Wait()
	if err := s.lock.Close(); err != nil {
		return fmt.Errorf("close store %s: %w", s.root, err)
	}
	return nil
}

// begin registers an operation; the caller holds s.mu and must call
// s.ops.Done when it ends.
func (s *Store) begin() error {
	if s.closed {
		return ErrClosed
	}
	s.ops.Add(1)
	return nil
}

// HasLayer reports whether the layer with this chain ID is in the store.
func (s *Store) HasLayer(chainID digest.Digest) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.layers[chainID]
	return ok
}

// GC deletes the layers that no mounted bundle and no EnsureLayer or Mount
// in progress references, children before parents, and returns how many
// it deleted. A layer is gone from the store (HasLayer is false) as soon as
// its record is; the files are deleted after the lock is released.
func (s *Store) GC(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("gc %s: %w", s.root, err)
	}
	s.mu.Lock()
	if err := s.begin(); err != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("gc %s: %w", s.root, err)
	}
	defer s.ops.Done()
	var victims []*layer
	for _, l := range s.layers {
		if l.refs == 0 {
			victims = append(victims, l)
		}
	}
	// A child is always committed after its parent, so it has the larger
	// number: deleting in decreasing order never orphans a layer, even if
	// we stop half-way.
	slices.SortFunc(victims, func(a, b *layer) int { return compareDesc(a.id, b.id) })
	var (
		trash []string
		errs  []error
	)
	removed := 0
	for _, l := range victims {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		if err := removeFile(s.layerRecord(l.id)); err != nil {
			errs = append(errs, fmt.Errorf("remove record of layer %s: %w", l.chainID, err))
			break
		}
		delete(s.layers, l.chainID)
		removed++
		// Out of layers/ at once (a rename), deleted outside the lock.
		dir := s.layerDir(l.id)
		moved := filepath.Join(s.root, dirTmp, "gc-"+strconv.FormatUint(l.id, 10))
		if err := os.Rename(dir, moved); err == nil {
			trash = append(trash, moved)
		} else if !errors.Is(err, os.ErrNotExist) {
			trash = append(trash, dir)
		}
	}
	s.mu.Unlock()
	for _, dir := range trash {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("delete layer dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return removed, fmt.Errorf("gc %s: %w", s.root, err)
	}
	return removed, nil
}

func compareDesc(a, b uint64) int {
	switch {
	case a > b:
		return -1
	case a < b:
		return 1
	}
	return 0
}

func (s *Store) layerDir(id uint64) string {
	return filepath.Join(s.root, dirLayers, strconv.FormatUint(id, 10))
}

func (s *Store) layerRecord(id uint64) string {
	return filepath.Join(s.root, dirMeta, dirLayers, recordName(id))
}

func (s *Store) bundleDir(id uint64) string {
	return filepath.Join(s.root, dirOverlay, strconv.FormatUint(id, 10))
}

func (s *Store) upperDir(id uint64) string {
	return filepath.Join(s.bundleDir(id), "upper")
}

func (s *Store) workDir(id uint64) string {
	return filepath.Join(s.bundleDir(id), "work")
}

func (s *Store) bundleRecord(id uint64) string {
	return filepath.Join(s.root, dirMeta, dirBundles, recordName(id))
}

func (s *Store) tmpDir() string {
	return filepath.Join(s.root, dirTmp)
}

// checkRoot refuses roots whose paths could not be passed safely in
// overlay mount options (',' separates options, ':' lowerdirs, '\\'
// escapes) or would be escaped in /proc/self/mountinfo.
func checkRoot(root string) error {
	for _, r := range root {
		if r == ',' || r == ':' || r == '\\' || r == '=' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("root path contains %q, which overlay mount options cannot carry", r)
		}
	}
	return nil
}

// privateDir creates dir (0700) if needed and makes sure it is a real
// directory with mode 0700.
func privateDir(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	return nil
}

// recover brings the directory tree into a consistent state and loads it.
func (s *Store) recover() error {
	tmp := s.tmpDir()
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("empty %s: %w", tmp, err)
	}
	for _, d := range []string{
		tmp,
		filepath.Join(s.root, dirLayers),
		filepath.Join(s.root, dirOverlay),
		filepath.Join(s.root, dirMeta),
		filepath.Join(s.root, dirMeta, dirLayers),
		filepath.Join(s.root, dirMeta, dirBundles),
	} {
		if err := privateDir(d); err != nil {
			return fmt.Errorf("make %s: %w", d, err)
		}
	}
	if err := s.loadLayers(); err != nil {
		return err
	}
	return s.loadBundles()
}

// loadLayers loads the valid layer records, drops the others and deletes
// every layer directory without a valid record.
func (s *Store) loadLayers() error {
	metaDir := filepath.Join(s.root, dirMeta, dirLayers)
	entries, err := os.ReadDir(metaDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", metaDir, err)
	}
	var maxID uint64
	recs := make(map[digest.Digest]*layerRecord)
	drop := func(path string) error {
		if err := removeFile(path); err != nil {
			return fmt.Errorf("remove stale layer record %s: %w", path, err)
		}
		return nil
	}
	for _, e := range entries {
		path := filepath.Join(metaDir, e.Name())
		id, ok := parseRecordName(e.Name())
		if !ok {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("remove stray %s: %w", path, err)
			}
			continue
		}
		maxID = max(maxID, id)
		rec := new(layerRecord)
		if err := readRecord(path, rec); err != nil || rec.validate(id) != nil {
			if err := drop(path); err != nil {
				return err
			}
			continue
		}
		if fi, err := os.Lstat(s.layerDir(id)); err != nil || !fi.IsDir() {
			if err := drop(path); err != nil {
				return err
			}
			continue
		}
		if prev, dup := recs[rec.ChainID]; dup {
			// Cannot happen through this package; keep the older one.
			older, newer := prev, rec
			if rec.ID < prev.ID {
				older, newer = rec, prev
			}
			recs[rec.ChainID] = older
			if err := drop(s.layerRecord(newer.ID)); err != nil {
				return err
			}
			continue
		}
		recs[rec.ChainID] = rec
	}
	// Keep a record only if its parents lead to a base layer (no missing
	// parent, no cycle).
	for chainID, rec := range recs {
		if !reachesBase(rec, recs) {
			delete(recs, chainID) // its descendants fail the walk too
			if err := drop(s.layerRecord(rec.ID)); err != nil {
				return err
			}
		}
	}
	for chainID, rec := range recs {
		s.layers[chainID] = &layer{chainID: chainID, id: rec.ID}
	}
	for chainID, rec := range recs {
		if rec.Parent != "" {
			if p, ok := s.layers[rec.Parent]; ok {
				s.layers[chainID].parent = p
			}
		}
	}
	kept := make(map[uint64]bool, len(s.layers))
	for _, l := range s.layers {
		kept[l.id] = true
	}
	layersDir := filepath.Join(s.root, dirLayers)
	entries, err = os.ReadDir(layersDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", layersDir, err)
	}
	for _, e := range entries {
		id, ok := parseID(e.Name())
		if ok {
			maxID = max(maxID, id)
			if kept[id] {
				continue
			}
		}
		path := filepath.Join(layersDir, e.Name())
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("remove unrecorded layer %s: %w", path, err)
		}
	}
	s.nextLayer = maxID + 1
	return nil
}

func reachesBase(rec *layerRecord, recs map[digest.Digest]*layerRecord) bool {
	cur := rec
	for range len(recs) + 1 {
		if cur.Parent == "" {
			return true
		}
		p, ok := recs[cur.Parent]
		if !ok {
			return false
		}
		cur = p
	}
	return false // a cycle
}

// loadBundles keeps the bundle records whose overlay is still mounted and
// deletes the others with their upper and work dirs.
func (s *Store) loadBundles() error {
	// upperdir -> mount points of the overlays using it
	mounts, err := mountinfo.GetMounts(mountinfo.FSTypeFilter("overlay"))
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	uppers := make(map[string][]string)
	for _, m := range mounts {
		if up := overlayOption(m.VFSOptions, "upperdir"); up != "" {
			uppers[up] = append(uppers[up], m.Mountpoint)
		}
	}
	metaDir := filepath.Join(s.root, dirMeta, dirBundles)
	entries, err := os.ReadDir(metaDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", metaDir, err)
	}
	var maxID uint64
	for _, e := range entries {
		path := filepath.Join(metaDir, e.Name())
		id, ok := parseRecordName(e.Name())
		if !ok {
			if err := os.RemoveAll(path); err != nil {
				return fmt.Errorf("remove stray %s: %w", path, err)
			}
			continue
		}
		maxID = max(maxID, id)
		rec := new(bundleRecord)
		live := readRecord(path, rec) == nil && rec.validate(id) == nil &&
			slices.Contains(uppers[s.upperDir(id)], rec.Rootfs)
		if live {
			if _, dup := s.bundles[rec.Bundle]; dup {
				// Cannot happen through this package. Leave it be: its
				// upper is in use, and it is not ours to unmount.
				continue
			}
		}
		if !live {
			if err := removeFile(path); err != nil {
				return fmt.Errorf("remove stale bundle record %s: %w", path, err)
			}
			continue // its directory goes below, unless the kernel uses it
		}
		b := &bundleInfo{path: rec.Bundle, rootfs: rec.Rootfs, id: id, top: rec.Top, state: bundleMounted}
		if top, ok := s.layers[rec.Top]; ok {
			b.chain = top.chain()
			pin(b.chain)
		}
		s.bundles[b.path] = b
	}
	overlayDir := filepath.Join(s.root, dirOverlay)
	entries, err = os.ReadDir(overlayDir)
	if err != nil {
		return fmt.Errorf("read %s: %w", overlayDir, err)
	}
	kept := make(map[uint64]bool, len(s.bundles))
	for _, b := range s.bundles {
		kept[b.id] = true
	}
	for _, e := range entries {
		id, ok := parseID(e.Name())
		if ok {
			maxID = max(maxID, id)
			if kept[id] {
				continue
			}
		}
		path := filepath.Join(overlayDir, e.Name())
		if usedAsUpper(path, uppers) {
			continue // the kernel still writes there; never delete it
		}
		if err := os.RemoveAll(path); err != nil {
			return fmt.Errorf("remove unrecorded bundle dir %s: %w", path, err)
		}
	}
	s.nextBundle = maxID + 1
	return nil
}

// overlayOption returns the value of key in an overlay's super options.
func overlayOption(opts, key string) string {
	for o := range strings.SplitSeq(opts, ",") {
		if v, ok := strings.CutPrefix(o, key+"="); ok {
			return v
		}
	}
	return ""
}

func usedAsUpper(dir string, uppers map[string][]string) bool {
	for up := range uppers {
		if up == dir || strings.HasPrefix(up, dir+"/") {
			return true
		}
	}
	return false
}
