package kbs_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/attester/tdx"
	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/kbc/kbs"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
	snpv "github.com/guestd/guestd/test/kbs/verifier/snp"
	tdxv "github.com/guestd/guestd/test/kbs/verifier/tdx"
	tpmv "github.com/guestd/guestd/test/kbs/verifier/tpm"
	"github.com/guestd/guestd/test/swtpm"
	"github.com/guestd/guestd/test/tee/snpfake"
	"github.com/guestd/guestd/test/tee/tdxfake"
)

// teeSetups builds, per TEE, an attester on simulated (snp, tdx) or
// emulated (tpm: a real swtpm) hardware and the matching KBS verifier.
var teeSetups = []struct {
	name  string
	setup func(b *testing.B) (attester.Attester, testkbs.Verifier)
}{
	{"sample", func(b *testing.B) (attester.Attester, testkbs.Verifier) {
		return sample.New(), samplev.New()
	}},
	{"snp", func(b *testing.B) (attester.Attester, testkbs.Verifier) {
		fake, err := snpfake.New(snpfake.Options{})
		if err != nil {
			b.Fatal(err)
		}
		v, err := snpv.New(snpv.Options{RootsPEM: fake.RootsPEM(), Product: fake.ProductLine()})
		if err != nil {
			b.Fatal(err)
		}
		return snp.New(fake), v
	}},
	{"tdx", func(b *testing.B) (attester.Attester, testkbs.Verifier) {
		fake, err := tdxfake.New(tdxfake.Options{})
		if err != nil {
			b.Fatal(err)
		}
		v, err := tdxv.New(tdxv.Options{RootPEM: fake.RootPEM()})
		if err != nil {
			b.Fatal(err)
		}
		return tdx.New(fake, tdx.Options{CCELPath: filepath.Join(b.TempDir(), "none")}), v
	}},
	{"tpm", func(b *testing.B) (attester.Attester, testkbs.Verifier) {
		sw := swtpm.Start(b)
		a, err := tpm.Open(context.Background(), tpm.Options{Device: sw.Device()})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { a.Close() })
		v, err := tpmv.New(tpmv.Options{TrustedAKsPEM: a.AKPublicPEM()})
		if err != nil {
			b.Fatal(err)
		}
		return a, v
	}},
}

// BenchmarkAttestTEE measures one full attestation per TEE against the
// local test KBS: /auth, evidence, /attest with verification, token. The
// snp and tdx figures include the simulated signing and the production
// verification; tpm includes a real (software) TPM quote.
func BenchmarkAttestTEE(b *testing.B) {
	for _, tc := range teeSetups {
		b.Run(tc.name, func(b *testing.B) {
			a, v := tc.setup(b)
			cfg := kbsConfig(b)
			cfg.Verifiers = map[string]testkbs.Verifier{tc.name: v}
			k := kbstest.Start(b, cfg)
			for b.Loop() {
				c, err := kbs.New(kbs.Config{URL: k.URL, Attester: a})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Attest(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
