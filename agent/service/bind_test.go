package service_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/attester/snp"
	"github.com/guestd/guestd/attester/tdx"
	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/test/swtpm"
	"github.com/guestd/guestd/test/tee/snpfake"
	"github.com/guestd/guestd/test/tee/tdxfake"
)

func newAA(t *testing.T, cfg service.AAConfig) *service.AA {
	t.Helper()
	cfg.Logger = testLogger(t)
	aa, err := service.NewAA(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return aa
}

func bind(aa *service.AA, digest []byte) error {
	_, err := aa.BindInitData(context.Background(), &aapb.BindInitDataRequest{Digest: digest})
	return err
}

// TestBindInitDataLaunchMeasurement: on TDX and SNP the digest, padded or
// truncated to the register, must equal MRCONFIGID or HOSTDATA, read from
// evidence of the (fake) hardware.
func TestBindInitDataLaunchMeasurement(t *testing.T) {
	d256 := sha256.Sum256([]byte("initdata"))
	d384 := sha512.Sum384([]byte("initdata"))
	other := sha256.Sum256([]byte("other"))

	tdxFor := func(t *testing.T, mrConfigID []byte) attester.Attester {
		fake, err := tdxfake.New(tdxfake.Options{MrConfigID: mrConfigID})
		if err != nil {
			t.Fatal(err)
		}
		return tdx.New(fake, tdx.Options{CCELPath: "/nonexistent"})
	}
	snpFor := func(t *testing.T, hostData []byte) attester.Attester {
		fake, err := snpfake.New(snpfake.Options{HostData: hostData})
		if err != nil {
			t.Fatal(err)
		}
		return snp.New(fake)
	}
	for _, tc := range []struct {
		name     string
		attester func(*testing.T) attester.Attester
		digest   []byte
		want     codes.Code
		parts    []string
	}{
		{"tdx sha384", func(t *testing.T) attester.Attester { return tdxFor(t, d384[:]) }, d384[:], codes.OK, nil},
		{"tdx sha256 zero-padded", func(t *testing.T) attester.Attester { return tdxFor(t, d256[:]) }, d256[:], codes.OK, nil},
		{"tdx mismatch", func(t *testing.T) attester.Attester { return tdxFor(t, d384[:]) }, other[:], codes.FailedPrecondition, []string{"MRCONFIGID"}},
		{"snp sha256", func(t *testing.T) attester.Attester { return snpFor(t, d256[:]) }, d256[:], codes.OK, nil},
		{"snp sha384 truncated", func(t *testing.T) attester.Attester { return snpFor(t, d384[:32]) }, d384[:], codes.OK, nil},
		{"snp mismatch", func(t *testing.T) attester.Attester { return snpFor(t, d256[:]) }, other[:], codes.FailedPrecondition, []string{"HOSTDATA"}},
		{"sample cannot bind", func(*testing.T) attester.Attester { return sample.New() }, other[:], codes.OK, nil},
		{"empty digest", func(*testing.T) attester.Attester { return sample.New() }, nil, codes.InvalidArgument, []string{"empty"}},
		{"oversized digest", func(*testing.T) attester.Attester { return sample.New() }, make([]byte, 65), codes.InvalidArgument, []string{"65 bytes"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := bind(newAA(t, service.AAConfig{Attester: tc.attester(t)}), tc.digest)
			if tc.want == codes.OK {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, tc.name, err, tc.want, tc.parts...)
		})
	}
}

// TestBindInitDataTPM: a TPM extends the SHA-256 digest into PCR 8, once.
func TestBindInitDataTPM(t *testing.T) {
	ctx := context.Background()
	sw := swtpm.Start(t)
	open := func() *tpm.Attester {
		a, err := tpm.Open(ctx, tpm.Options{Device: sw.Device()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { a.Close() })
		return a
	}
	att := open()
	cur := att // the attester PCR 8 is read through
	raw := []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"aa.toml\" = \"\"\n")
	id, err := config.ParseInitdata(raw)
	if err != nil {
		t.Fatal(err)
	}
	aa := newAA(t, service.AAConfig{Attester: att, InitData: id})
	pcr8 := func() []byte {
		v, err := cur.ReadPCR(ctx, service.InitDataPCR)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if !bytes.Equal(pcr8(), make([]byte, 32)) {
		t.Fatalf("PCR 8 starts as %x", pcr8())
	}
	other := sha256.Sum256([]byte("other"))
	wantCode(t, "a digest that is not the launch init-data's", bind(aa, other[:]), codes.FailedPrecondition, "launched with")

	bound, err := aa.BindLaunchInitData(ctx)
	if err != nil || !bound {
		t.Fatalf("BindLaunchInitData: %v, %v", bound, err)
	}
	want := sha256.Sum256(append(make([]byte, 32), id.Digest...))
	if got := pcr8(); !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR 8 = %x, want SHA-256(0 ‖ digest) = %x", got, want)
	}
	// Over the wire, the same digest again: no second extend.
	aaSide, _ := serveTTRPC(t, aa, nil, nil)
	if _, err := aaSide.aa.BindInitData(ctx, &aapb.BindInitDataRequest{Digest: id.Digest}); err != nil {
		t.Fatal(err)
	}
	if got := pcr8(); !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR 8 changed on a repeated binding: %x", got)
	}
	// A restarted agent finds the binding in PCR 8 (swtpm serves one
	// connection at a time).
	att.Close()
	cur = open()
	again := newAA(t, service.AAConfig{Attester: cur})
	if err := bind(again, id.Digest); err != nil {
		t.Fatal(err)
	}
	if got := pcr8(); !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR 8 changed on a restart: %x", got)
	}
	wantCode(t, "a second digest", bind(again, other[:]), codes.FailedPrecondition, "already binds")
	wantCode(t, "a SHA-384 digest", bind(newAA(t, service.AAConfig{Attester: cur}), make([]byte, 48)), codes.InvalidArgument, "SHA-256")
}
