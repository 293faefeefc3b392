package snapshot

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestEnsureLayerPassesParentsTopmostFirst(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("a"), "", map[string]string{"a": "A"})
	ensure(t, s, id("b"), id("a"), map[string]string{"b": "B"})

	var got []string
	var seen []string
	err := s.EnsureLayer(context.Background(), id("c"), id("b"), func(_ context.Context, dir string, parents []string) error {
		got = parents
		for _, p := range parents { // the parents are readable while apply runs
			es, err := os.ReadDir(p)
			if err != nil {
				return err
			}
			for _, e := range es {
				seen = append(seen, e.Name())
			}
		}
		if n := names(t, dir); len(n) != 0 {
			t.Errorf("apply got a non-empty dir: %v", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{s.layerDir(layerID(t, s, id("b"))), s.layerDir(layerID(t, s, id("a")))}
	if !slices.Equal(got, want) {
		t.Errorf("parents = %v, want %v", got, want)
	}
	if !slices.Equal(seen, []string{"b", "a"}) {
		t.Errorf("parents' contents = %v, want [b a]", seen)
	}
	if !s.HasLayer(id("c")) {
		t.Error("layer c missing after EnsureLayer")
	}
	// Numeric names, increasing.
	if a, b, c := layerID(t, s, id("a")), layerID(t, s, id("b")), layerID(t, s, id("c")); !(a < b && b < c) {
		t.Errorf("layer numbers %d %d %d are not increasing", a, b, c)
	}
}

func TestEnsureLayerExistingDoesNotApply(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("a"), "", map[string]string{"a": "A"})
	err := s.EnsureLayer(context.Background(), id("a"), "", func(context.Context, string, []string) error {
		t.Error("apply called for an existing layer")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestEnsureLayerErrors(t *testing.T) {
	s := openStore(t)
	ensure(t, s, id("base"), "", nil)
	ensure(t, s, id("child"), id("base"), nil)
	ensure(t, s, id("other"), "", nil)
	noop := func(context.Context, string, []string) error { return nil }

	tests := []struct {
		name    string
		chainID digest.Digest
		parent  digest.Digest
		apply   func(context.Context, string, []string) error
		is      error  // errors.Is target, if any
		substr  string // in the message
	}{
		{name: "invalid chain ID", chainID: "sha256:xyz", apply: noop, substr: "chain ID"},
		{name: "empty chain ID", chainID: "", apply: noop, substr: "chain ID"},
		{name: "invalid parent", chainID: id("x"), parent: "nope", apply: noop, substr: "parent"},
		{name: "missing parent", chainID: id("x"), parent: id("absent"), apply: noop, is: ErrNotFound},
		{name: "own parent", chainID: id("x"), parent: id("x"), apply: noop, substr: "own parent"},
		{name: "nil apply", chainID: id("x"), apply: nil, substr: "nil apply"},
		{name: "exists with another parent", chainID: id("child"), parent: id("other"), apply: noop, substr: "exists with parent"},
		{name: "exists as base, asked with parent", chainID: id("base"), parent: id("other"), apply: noop, substr: "exists with parent"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.EnsureLayer(context.Background(), tt.chainID, tt.parent, tt.apply)
			if err == nil {
				t.Fatal("EnsureLayer succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.substr) {
				t.Errorf("error %q does not mention %q", err, tt.substr)
			}
		})
	}
	if s.HasLayer(id("x")) {
		t.Error("a failed EnsureLayer left layer x")
	}
}

func TestEnsureLayerApplyErrorLeavesNothing(t *testing.T) {
	s := openStore(t)
	boom := errors.New("boom")
	var calls atomic.Int32
	failing := func(_ context.Context, dir string, _ []string) error {
		calls.Add(1)
		if err := os.WriteFile(filepath.Join(dir, "half"), []byte("x"), 0o600); err != nil {
			return err
		}
		return boom
	}
	err := s.EnsureLayer(context.Background(), id("a"), "", failing)
	if !errors.Is(err, boom) {
		t.Fatalf("EnsureLayer error = %v, want %v", err, boom)
	}
	if s.HasLayer(id("a")) {
		t.Fatal("failed layer is in the store")
	}
	for _, d := range []string{dirTmp, dirLayers, filepath.Join(dirMeta, dirLayers)} {
		if n := names(t, filepath.Join(s.root, d)); len(n) != 0 {
			t.Errorf("%s not empty after failed apply: %v", d, n)
		}
	}
	// The error is not cached: a retry applies again.
	err = s.EnsureLayer(context.Background(), id("a"), "", func(ctx context.Context, dir string, p []string) error {
		calls.Add(1)
		return files(map[string]string{"ok": "1"})(ctx, dir, p)
	})
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := calls.Load(); got != 2 {
		t.Errorf("apply ran %d times, want 2", got)
	}
	if got := readFile(t, filepath.Join(s.layerDir(layerID(t, s, id("a"))), "ok")); got != "1" {
		t.Errorf("layer content %q", got)
	}
	if n := names(t, filepath.Join(s.root, dirTmp)); len(n) != 0 {
		t.Errorf("tmp not empty: %v", n)
	}
}

func TestEnsureLayerApplyPanicLeavesNothing(t *testing.T) {
	s := openStore(t)
	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Errorf("recovered %v, want the apply's panic", r)
			}
		}()
		_ = s.EnsureLayer(context.Background(), id("a"), "", func(_ context.Context, dir string, _ []string) error {
			_ = os.WriteFile(filepath.Join(dir, "f"), nil, 0o600)
			panic("kaboom")
		})
	}()
	if s.HasLayer(id("a")) {
		t.Fatal("layer of a panicking apply is in the store")
	}
	if n := names(t, filepath.Join(s.root, dirTmp)); len(n) != 0 {
		t.Errorf("tmp not empty: %v", n)
	}
	ensure(t, s, id("a"), "", map[string]string{"f": "x"}) // not stuck in flight
}

// concurrentEnsure starts n EnsureLayer calls for the same chain ID with an
// apply that blocks until the other n-1 calls are waiting for it, then
// returns result. It returns the errors and how many times apply ran.
func concurrentEnsure(t *testing.T, s *Store, n int, chainID digest.Digest, result error) ([]error, int32) {
	t.Helper()
	var calls atomic.Int32
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock() // a failing test must not leave apply blocked
	apply := func(_ context.Context, dir string, _ []string) error {
		calls.Add(1)
		<-release
		if result != nil {
			return result
		}
		return os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o600)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.EnsureLayer(context.Background(), chainID, "", apply) })
	}
	waitFor(t, s, "waiters", func() bool {
		c, ok := s.inflight[chainID]
		return ok && c.waiters == n-1
	})
	unblock()
	wg.Wait()
	return errs, calls.Load()
}

func TestEnsureLayerConcurrentSameChainIDAppliesOnce(t *testing.T) {
	s := openStore(t)
	errs, calls := concurrentEnsure(t, s, 8, id("a"), nil)
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if calls != 1 {
		t.Errorf("apply ran %d times, want 1", calls)
	}
	if !s.HasLayer(id("a")) {
		t.Error("layer missing")
	}
	if n := names(t, filepath.Join(s.root, dirLayers)); len(n) != 1 {
		t.Errorf("layers/ = %v, want one layer", n)
	}
}

func TestEnsureLayerConcurrentErrorIsSharedNotCached(t *testing.T) {
	s := openStore(t)
	boom := errors.New("boom")
	errs, calls := concurrentEnsure(t, s, 8, id("a"), boom)
	for i, err := range errs {
		if !errors.Is(err, boom) {
			t.Errorf("caller %d: error %v, want %v", i, err, boom)
		}
	}
	if calls != 1 {
		t.Errorf("apply ran %d times, want 1", calls)
	}
	if s.HasLayer(id("a")) {
		t.Fatal("failed layer in store")
	}
	errs, calls = concurrentEnsure(t, s, 8, id("a"), nil)
	for i, err := range errs {
		if err != nil {
			t.Errorf("retry caller %d: %v", i, err)
		}
	}
	if calls != 1 || !s.HasLayer(id("a")) {
		t.Errorf("retry: apply ran %d times, layer present %v", calls, s.HasLayer(id("a")))
	}
}

func TestEnsureLayerDifferentChainIDsRunInParallel(t *testing.T) {
	s := openStore(t)
	const n = 4
	var started sync.WaitGroup
	started.Add(n)
	allStarted := make(chan struct{})
	go func() { started.Wait(); close(allStarted) }()
	apply := func(context.Context, string, []string) error {
		started.Done()
		select { // only returns once every apply is running at the same time
		case <-allStarted:
			return nil
		case <-time.After(10 * time.Second):
			return errors.New("applies did not run in parallel")
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.EnsureLayer(context.Background(), id(string(rune('a'+i))), "", apply) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("layer %d: %v", i, err)
		}
	}
}

func TestEnsureLayerWaiterRetriesWhenLeaderIsCanceled(t *testing.T) {
	s := openStore(t)
	leaderCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	leaderErr := make(chan error, 1)
	go func() {
		leaderErr <- s.EnsureLayer(leaderCtx, id("a"), "", func(ctx context.Context, _ string, _ []string) error {
			calls.Add(1)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	waitFor(t, s, "leader", func() bool { _, ok := s.inflight[id("a")]; return ok })
	waiterErr := make(chan error, 1)
	go func() {
		waiterErr <- s.EnsureLayer(context.Background(), id("a"), "", func(ctx context.Context, dir string, p []string) error {
			calls.Add(1)
			return files(map[string]string{"f": "x"})(ctx, dir, p)
		})
	}()
	waitFor(t, s, "waiter", func() bool { c, ok := s.inflight[id("a")]; return ok && c.waiters == 1 })
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	if err := <-waiterErr; err != nil {
		t.Errorf("waiter with a live context: %v", err)
	}
	if calls.Load() != 2 || !s.HasLayer(id("a")) {
		t.Errorf("apply ran %d times (want 2), layer present %v", calls.Load(), s.HasLayer(id("a")))
	}
}

func TestEnsureLayerWaiterContextCanceled(t *testing.T) {
	s := openStore(t)
	release := make(chan struct{})
	var once sync.Once
	unblock := func() { once.Do(func() { close(release) }) }
	defer unblock()
	leaderErr := make(chan error, 1)
	go func() {
		leaderErr <- s.EnsureLayer(context.Background(), id("a"), "", func(context.Context, string, []string) error {
			<-release
			return nil
		})
	}()
	waitFor(t, s, "leader", func() bool { _, ok := s.inflight[id("a")]; return ok })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := s.EnsureLayer(ctx, id("a"), "", func(context.Context, string, []string) error {
		t.Error("waiter applied")
		return nil
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("waiter: %v, want DeadlineExceeded", err)
	}
	unblock()
	if err := <-leaderErr; err != nil || !s.HasLayer(id("a")) {
		t.Errorf("leader: %v", err)
	}
}

func TestEnsureLayerRootIsPrivate(t *testing.T) {
	s := openStore(t)
	err := s.EnsureLayer(context.Background(), id("a"), "", func(_ context.Context, dir string, _ []string) error {
		return os.Chmod(dir, 0o755) // e.g. a "./" tar entry
	})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.layerDir(layerID(t, s, id("a"))))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("layer dir mode %o, want 700", perm)
	}
	fi, err = os.Stat(s.layerRecord(layerID(t, s, id("a"))))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("layer record mode %o, want 600", perm)
	}
}
