package snapshot

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/opencontainers/go-digest"
)

// errApplyPanicked is what waiters see when the apply they waited for
// panicked (the panic itself goes on up the leader's stack).
var errApplyPanicked = errors.New("apply panicked")

// EnsureLayer makes sure the layer whose chain ID is chainID exists; parent
// is the chain ID of the layer below it ("" for a base layer) and must be
// in the store already (ErrNotFound otherwise). If the layer exists with
// another parent, EnsureLayer fails.
//
// A missing layer is built by apply(ctx, dir, parents) in a fresh, empty
// directory dir, with parents the directories of the lower layers, topmost
// first (read them, never write them). Only if apply returns nil is dir
// renamed into place and recorded; otherwise nothing of it remains and the
// error is returned. The parent chain cannot be garbage collected while
// apply runs. Concurrent calls for the same chain ID run apply once; the
// others wait and return its outcome, which is not cached.
func (s *Store) EnsureLayer(ctx context.Context, chainID, parent digest.Digest, apply func(ctx context.Context, dir string, parents []string) error) error {
	if err := chainID.Validate(); err != nil {
		return fmt.Errorf("ensure layer %q: chain ID: %w", chainID, err)
	}
	if parent != "" {
		if err := parent.Validate(); err != nil {
			return fmt.Errorf("ensure layer %s: parent %q: %w", chainID, parent, err)
		}
		if parent == chainID {
			return fmt.Errorf("ensure layer %s: a layer cannot be its own parent", chainID)
		}
	}
	if apply == nil {
		return fmt.Errorf("ensure layer %s: nil apply function", chainID)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ensure layer %s: %w", chainID, err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return fmt.Errorf("ensure layer %s: %w", chainID, ErrClosed)
		}
		if l, ok := s.layers[chainID]; ok {
			got := l.parentID()
			s.mu.Unlock()
			if got != parent {
				return fmt.Errorf("ensure layer %s: it exists with parent %q, not %q", chainID, got, parent)
			}
			return nil
		}
		if c, ok := s.inflight[chainID]; ok {
			c.waiters++
			s.mu.Unlock()
			select {
			case <-c.done:
			case <-ctx.Done():
				s.mu.Lock()
				c.waiters--
				s.mu.Unlock()
				return fmt.Errorf("ensure layer %s: %w", chainID, ctx.Err())
			}
			if c.err == nil || (c.retry && ctx.Err() == nil) {
				continue // now present (checked above), or ours to apply again
			}
			return fmt.Errorf("ensure layer %s: %w", chainID, c.err)
		}
		var p *layer
		if parent != "" {
			if p = s.layers[parent]; p == nil {
				s.mu.Unlock()
				return fmt.Errorf("ensure layer %s: parent %s: %w", chainID, parent, ErrNotFound)
			}
		}
		_ = s.begin() // not closed: checked above under the same lock
		c := &call{done: make(chan struct{})}
		s.inflight[chainID] = c
		var lower []*layer
		if p != nil {
			lower = p.chain()
		}
		pin(lower)
		s.mu.Unlock()
		return s.lead(ctx, c, chainID, p, lower, apply)
	}
}

// lead builds the layer for the call c and publishes the outcome.
func (s *Store) lead(ctx context.Context, c *call, chainID digest.Digest, parent *layer, lower []*layer, apply func(context.Context, string, []string) error) error {
	defer s.ops.Done()
	finished := false
	defer func() {
		if !finished { // apply panicked: release the waiters, then go on panicking
			s.finish(c, chainID, lower, nil, errApplyPanicked, false)
		}
	}()
	l, err := s.build(ctx, chainID, parent, lower, apply)
	finished = true
	s.finish(c, chainID, lower, l, err, err != nil && ctx.Err() != nil)
	if err != nil {
		return fmt.Errorf("ensure layer %s: %w", chainID, err)
	}
	return nil
}

func (s *Store) finish(c *call, chainID digest.Digest, lower []*layer, l *layer, err error, retry bool) {
	s.mu.Lock()
	if l != nil {
		s.layers[chainID] = l
	}
	delete(s.inflight, chainID)
	unpin(lower)
	c.err, c.retry = err, retry
	s.mu.Unlock()
	close(c.done)
}

// build applies the layer in tmp/, renames it to layers/<N> and records it.
func (s *Store) build(ctx context.Context, chainID digest.Digest, parent *layer, lower []*layer, apply func(context.Context, string, []string) error) (*layer, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-") // mode 0700
	if err != nil {
		return nil, fmt.Errorf("make layer dir: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			_ = os.RemoveAll(tmp)
		}
	}()
	parents := make([]string, len(lower))
	for i, l := range lower {
		parents[i] = s.layerDir(l.id)
	}
	if err := apply(ctx, tmp, parents); err != nil {
		return nil, fmt.Errorf("apply: %w", err)
	}
	fi, err := os.Lstat(tmp)
	if err != nil {
		return nil, fmt.Errorf("after apply: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("after apply: %s is no longer a directory", tmp)
	}
	// Whatever apply did to the root's mode, a layer dir stays private (a
	// lower's root mode never shows through an overlay with an upper).
	if err := os.Chmod(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("after apply: %w", err)
	}

	s.mu.Lock()
	id := s.nextLayer
	s.nextLayer++
	s.mu.Unlock()
	dir := s.layerDir(id)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, fmt.Errorf("commit layer dir: %w", err)
	}
	committed = true
	rec := layerRecord{Version: recordVersion, ID: id, ChainID: chainID}
	if parent != nil {
		rec.Parent = parent.chainID
	}
	if err := writeRecord(s.tmpDir(), s.layerRecord(id), &rec); err != nil {
		_ = os.RemoveAll(dir) // without a record it is garbage anyway
		return nil, err
	}
	return &layer{chainID: chainID, parent: parent, id: id}, nil
}
