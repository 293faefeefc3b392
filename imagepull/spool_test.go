package imagepull

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// TestSpoolFollow: a reader sees the blob while it downloads, and the
// verdict arrives with the end of the download.
func TestSpoolFollow(t *testing.T) {
	s, err := newSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 100000)
	d := digest.FromBytes(data)
	step := make(chan struct{})
	fetch := func(ctx context.Context, w io.Writer) error {
		for i := 0; i < len(data); i += 100000 {
			if _, err := w.Write(data[i : i+100000]); err != nil {
				return err
			}
			<-step // let the reader catch up with a partial blob
		}
		return nil
	}
	b, err := s.get(context.Background(), d, fetch)
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte)
	go func() { all, _ := io.ReadAll(r); got <- all }()
	for range 10 {
		time.Sleep(time.Millisecond)
		if finished, _ := b.Result(); finished {
			t.Fatal("download finished before it was allowed to")
		}
		step <- struct{}{}
	}
	if all := <-got; !bytes.Equal(all, data) {
		t.Fatalf("follower read %d bytes, want %d", len(all), len(data))
	}
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.Close()
	b.Release()
	if entries, _ := os.ReadDir(s.dir); len(entries) != 0 {
		t.Fatalf("released blob left %d files", len(entries))
	}
}

// TestSpoolShareAndFail: concurrent users share one download; a failed
// download reaches readers and waiters, and is not reused.
func TestSpoolShareAndFail(t *testing.T) {
	s, err := newSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromString("x")
	var calls atomic.Int32
	boom := errors.New("blob does not match its digest")
	release := make(chan struct{})
	fetch := func(ctx context.Context, w io.Writer) error {
		calls.Add(1)
		w.Write([]byte("partial"))
		<-release
		return boom
	}
	a, err := s.get(context.Background(), d, fetch)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.get(context.Background(), d, fetch)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := b.Open(context.Background())
	close(release)
	if _, err := io.ReadAll(r); !errors.Is(err, boom) {
		t.Fatalf("follower error %v, want the download's", err)
	}
	r.Close()
	if err := a.Wait(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("Wait = %v", err)
	}
	if calls.Load() != 1 {
		t.Fatalf("%d downloads for two users", calls.Load())
	}
	a.Release()
	b.Release()
	// The failure is not cached: a new user downloads again.
	c, err := s.get(context.Background(), d, func(ctx context.Context, w io.Writer) error { calls.Add(1); return nil })
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(context.Background()); err != nil || calls.Load() != 2 {
		t.Fatalf("retry: %v, %d downloads", err, calls.Load())
	}
	c.Release()
}

// TestSpoolReleaseStopsDownload: when the last user gives up, the download
// is cancelled even though its starter's context is still alive.
func TestSpoolReleaseStopsDownload(t *testing.T) {
	s, err := newSpool(filepath.Join(t.TempDir(), "spool"))
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	b, err := s.get(context.Background(), digest.FromString("y"), func(ctx context.Context, w io.Writer) error {
		<-ctx.Done()
		stopped <- ctx.Err()
		return ctx.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r, _ := b.Open(ctx)
	cancel()
	if _, err := io.ReadAll(r); !errors.Is(err, context.Canceled) {
		t.Fatalf("reader with a cancelled context: %v", err)
	}
	r.Close()
	b.Release()
	select {
	case err := <-stopped:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("download ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("download not cancelled after the last release")
	}
}
