package detect

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/attester/tdx"
	"github.com/guestd/guestd/attester/tpm"
)

// Order is the detection order, upstream's (tdx → sgx → az-tdx-vtpm →
// az-snp-vtpm → snp → csv → cca → se → tpm → sample) restricted to the TEEs
// guestd supports.
var order = []string{"tdx", "snp", "tpm"}

// Names returns the TEE names New accepts.
func Names() []string { return append(slices.Clone(order), "sample") }

// Options configures the probes and the attesters.
type Options struct {
	// Root prefixes every probed path; "" means "/". Tests point it at a
	// fake tree.
	Root string
	// TPM configures the TPM attester. A non-empty Device also counts as a
	// TPM being present (upstream's AA_TPM_DEVICE).
	TPM tpm.Options
	// TDX configures the TDX attester.
	TDX tdx.Options
	// Logger receives the detection result.
	Logger *slog.Logger
}

func (o Options) path(p string) string {
	if o.Root == "" {
		return p
	}
	return filepath.Join(o.Root, p)
}

func (o Options) exists(p string) bool {
	_, err := os.Stat(o.path(p))
	return err == nil
}

// Present reports whether the TEE name is available on this machine.
func Present(name string, opts Options) bool {
	switch name {
	case "tdx":
		return opts.exists("/dev/tdx_guest") || cpuFlag(opts.path("/proc/cpuinfo"), "tdx_guest")
	case "snp":
		return opts.exists("/sys/devices/platform/sev-guest") || opts.exists("/dev/sev-guest")
	case "tpm":
		if opts.TPM.Device != "" {
			return true
		}
		for _, d := range []string{"/dev/tpmrm0", "/dev/tpm0", "/dev/tpm1", "/dev/tpm2"} {
			if opts.exists(d) {
				return true
			}
		}
	case "sample":
		return true
	}
	return false
}

// Detect returns the attester of the first TEE present, or the sample
// attester (with a warning) when there is none. It does not fall back when
// a present TEE fails to open: that is an error, not a reason to run
// unattested.
func Detect(ctx context.Context, opts Options) (attester.Attester, error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, name := range order {
		if Present(name, opts) {
			log.Info("TEE detected", "tee", name)
			return New(ctx, name, opts)
		}
	}
	log.Warn("no TEE detected: using the sample attester, whose evidence proves nothing about this machine")
	return sample.New(), nil
}

// New opens the attester for the TEE name.
func New(ctx context.Context, name string, opts Options) (attester.Attester, error) {
	switch name {
	case "sample":
		return sample.New(), nil
	case "snp":
		a, err := snp.Default()
		if err != nil {
			return nil, fmt.Errorf("open snp attester: %w", err)
		}
		return a, nil
	case "tdx":
		a, err := tdx.Default(opts.TDX)
		if err != nil {
			return nil, fmt.Errorf("open tdx attester: %w", err)
		}
		return a, nil
	case "tpm":
		a, err := tpm.Open(ctx, opts.TPM)
		if err != nil {
			return nil, fmt.Errorf("open tpm attester: %w", err)
		}
		return a, nil
	}
	return nil, fmt.Errorf("TEE %q is not supported (want one of %s)", name, strings.Join(Names(), ", "))
}

// cpuFlag reports whether /proc/cpuinfo lists flag.
func cpuFlag(path, flag string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(key) == "flags" && slices.Contains(strings.Fields(val), flag) {
			return true
		}
	}
	return false
}
