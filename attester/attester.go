package attester

import (
	"context"
	"encoding/json"
	"fmt"
)

// Attester produces evidence that binds caller-chosen report data to the
// hardware state of the TEE.
type Attester interface {
	// Tee returns the TEE name exactly as the KBS protocol spells it
	// (kbs-types serde names: "sample", "snp", "tdx", "tpm", ...).
	Tee() string

	// Evidence returns the TEE's evidence as the JSON value a trustee
	// verifier takes for this TEE, with reportData bound into it. reportData
	// is typically a digest; each TEE pads or truncates it to its own report
	// data size (see Regularize) and rejects data that does not fit.
	Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error)
}

// Regularize pads data with zero bytes to exactly size bytes. Data longer
// than size is an error unless truncate is set, in which case it is cut to
// size (the TPM attester's rule, as upstream).
func Regularize(data []byte, size int, truncate bool) ([]byte, error) {
	if len(data) > size {
		if !truncate {
			return nil, fmt.Errorf("report data is %d bytes, the TEE takes at most %d", len(data), size)
		}
		data = data[:size]
	}
	out := make([]byte, size)
	copy(out, data)
	return out, nil
}
