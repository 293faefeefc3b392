package kbs

import (
	"context"
	"encoding/json"
)

// Verifier checks the evidence of one TEE, as trustee's verifier for that TEE
// does: its signatures against the verifier's trust roots, and that the report
// data the TEE bound equals reportData (the binding digest of the KBS
// protocol), padded or truncated by the TEE's rule. It returns the TCB claims
// that go into the attestation token under the TEE's name.
type Verifier interface {
	Verify(ctx context.Context, evidence json.RawMessage, reportData []byte) (map[string]any, error)
}
