package main

import (
	"strings"
	"testing"

	"github.com/guestd/guestd/imagepull"
)

// TestProgress checks what a terminal user sees: the policy verdict, the
// running byte count and rate, one line per finished or cached layer, and
// the total time.
func TestProgress(t *testing.T) {
	var b strings.Builder
	p := newProgress(&b)
	p.event(imagepull.Event{Image: "reg/app:1", Layer: -1, Phase: imagepull.PhaseVerify})
	p.event(imagepull.Event{Image: "reg/app:1", Layer: 0, Layers: 2, Phase: imagepull.PhaseFetch, Bytes: 3 << 20, Size: 4 << 20})
	p.event(imagepull.Event{Image: "reg/app:1", Layer: 0, Layers: 2, Digest: "sha256:0123456789abcdef0123", Phase: imagepull.PhaseDone})
	p.event(imagepull.Event{Image: "reg/app:1", Layer: 1, Layers: 2, Digest: "sha256:fedcba9876543210fedc", Phase: imagepull.PhaseCached})
	p.finish()
	out := b.String()
	for _, want := range []string{
		"reg/app:1: policy check passed",
		"fetched 3.0 MiB (",
		"/s)",
		"layer 1/2 sha256:0123456789ab done",
		"layer 2/2 sha256:fedcba987654 cached",
		"done in ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output lacks %q:\n%s", want, out)
		}
	}
}

func TestSize(t *testing.T) {
	for n, want := range map[int64]string{512: "512 B", 2048: "2.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.00 GiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
}
