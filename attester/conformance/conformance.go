package conformance

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"sync"
	"testing"

	"github.com/guestd/guestd/attester"
)

// KnownTees are the TEE names guestd's attesters may report.
var knownTees = map[string]bool{"sample": true, "snp": true, "tdx": true, "tpm": true}

// VerifyFunc checks that evidence is authentic and binds reportData. It must
// fail for evidence that binds any other report data.
type VerifyFunc func(evidence json.RawMessage, reportData []byte) error

// Check runs the conformance checks against a, using verify to check the
// evidence it produces.
func Check(t *testing.T, a attester.Attester, verify VerifyFunc) {
	t.Helper()
	ctx := context.Background()
	if tee := a.Tee(); !knownTees[tee] {
		t.Fatalf("Tee() = %q, not a known TEE name", tee)
	}
	rd1 := sha512.Sum384([]byte("conformance report data 1"))
	rd2 := sha512.Sum384([]byte("conformance report data 2"))

	ev1, err := a.Evidence(ctx, rd1[:])
	if err != nil {
		t.Fatalf("Evidence(rd1): %v", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(ev1, &obj); err != nil {
		t.Fatalf("evidence is not a JSON object: %v", err)
	}
	if len(obj) == 0 {
		t.Fatalf("evidence is an empty JSON object")
	}
	if err := verify(ev1, rd1[:]); err != nil {
		t.Fatalf("evidence for rd1 does not verify: %v", err)
	}
	if err := verify(ev1, rd2[:]); err == nil {
		t.Fatalf("evidence for rd1 verifies against rd2: report data is not bound")
	}

	ev2, err := a.Evidence(ctx, rd2[:])
	if err != nil {
		t.Fatalf("Evidence(rd2): %v", err)
	}
	if bytes.Equal(ev1, ev2) {
		t.Fatalf("evidence does not change with report data")
	}
	if err := verify(ev2, rd2[:]); err != nil {
		t.Fatalf("evidence for rd2 does not verify: %v", err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.Evidence(cctx, rd1[:]); err == nil {
		t.Fatalf("Evidence with a cancelled context succeeded")
	}

	if _, err := a.Evidence(ctx, make([]byte, 4096)); err == nil && a.Tee() != "tpm" {
		t.Fatalf("Evidence accepted 4096 bytes of report data")
	}

	// Concurrent callers must each get evidence for their own report data.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := sha512.Sum384([]byte{byte(i)})
			ev, err := a.Evidence(ctx, rd[:])
			if err == nil {
				err = verify(ev, rd[:])
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent caller %d: %v", i, err)
		}
	}
}
