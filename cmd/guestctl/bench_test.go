package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
)

// run1 runs a command under GNU time and returns its wall time and peak
// RSS in MiB. (The rusage Go gets from wait4 is useless here: Go starts
// children with vfork, so the child's peak RSS is floored at the test
// binary's own. GNU time forks a small process and reads the real figure.)
func run1(b *testing.B, name string, args ...string) (time.Duration, float64) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rss := filepath.Join(b.TempDir(), "rss")
	cmd := exec.CommandContext(ctx, "/usr/bin/time", append([]string{"-f", "%M", "-o", rss, name}, args...)...)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	data, err := os.ReadFile(rss)
	if err != nil {
		b.Fatal(err)
	}
	kib, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		b.Fatalf("GNU time wrote %q", data)
	}
	return wall, float64(kib) / 1024
}

// BenchmarkPullBig pulls a generated 1 GiB, 8-layer gzip image from a
// loopback registry with `guestctl pull` (verify, decompress, unpack into
// the layer store, mount) and, in the same run, with `skopeo copy` into an
// OCI layout followed by `umoci unpack`, reporting wall time and peak RSS
// of each. Run with `make bench` (it needs umoci: make deps installs it).
func BenchmarkPullBig(b *testing.B) {
	// Two sizes, to show peak RSS does not grow with the image.
	for _, perLayer := range []int64{32 << 20, 128 << 20} {
		b.Run(fmt.Sprintf("%dMiB", 8*perLayer>>20), func(b *testing.B) { benchPull(b, 8, perLayer) })
	}
}

func benchPull(b *testing.B, layers int, perLayer int64) {
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		b.Fatal("umoci is not installed (make deps installs it)")
	}
	reg := registry.Start(b, registry.Options{})
	img := images.Big(b, layers, perLayer)
	images.Push(b, img, reg, "bench/big:1")
	ref := reg.Host + "/bench/big:1"

	var gWall, sWall, uWall time.Duration
	var gRSS, sRSS, uRSS float64
	for b.Loop() {
		work, bundle := b.TempDir(), b.TempDir()
		gWall, gRSS = run1(b, guestctlBin, "pull", "--insecure-registry", reg.Host, "--work-dir", work, "--no-progress", ref, bundle)
		b.StopTimer()
		if _, err := os.Stat(filepath.Join(bundle, "rootfs", "data", fmt.Sprintf("layer-%d.bin", layers-1))); err != nil {
			b.Fatalf("pulled rootfs lacks the last layer's file: %v", err)
		}
		run1(b, guestctlBin, "rm", "--work-dir", work, bundle)
		b.StartTimer()

		layout, ubundle := b.TempDir(), filepath.Join(b.TempDir(), "bundle")
		sWall, sRSS = run1(b, "skopeo", "copy", "--insecure-policy", "--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":big")
		uWall, uRSS = run1(b, umoci, "unpack", "--image", layout+":big", ubundle)
	}
	b.ReportMetric(gWall.Seconds(), "guestctl-s")
	b.ReportMetric(gRSS, "guestctl-peakRSS-MiB")
	b.ReportMetric((sWall + uWall).Seconds(), "skopeo+umoci-s")
	b.ReportMetric(max(sRSS, uRSS), "skopeo+umoci-peakRSS-MiB")
	b.ReportMetric(float64(int64(layers)*perLayer)/(1<<20)/gWall.Seconds(), "guestctl-MiB/s")
	fmt.Fprintf(os.Stderr, "pull %d MiB/%d layers: guestctl %.2fs peak %.0f MiB; skopeo copy %.2fs peak %.0f MiB + umoci unpack %.2fs peak %.0f MiB\n",
		int64(layers)*perLayer>>20, layers, gWall.Seconds(), gRSS, sWall.Seconds(), sRSS, uWall.Seconds(), uRSS)
}
