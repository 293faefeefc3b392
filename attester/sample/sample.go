package sample

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
)

// MaxReportData is the largest report data the sample attester takes (the
// size of a SHA-512 digest, the largest binding hash).
const MaxReportData = 64

// Evidence is the sample TEE's evidence as trustee's sample verifier takes it.
type Evidence struct {
	SVN string `json:"svn"`
	// ReportData is the standard base64 of the raw report data, unpadded.
	ReportData string `json:"report_data"`
}

// Attester is the sample attester.
type Attester struct{}

// New returns the sample attester.
func New() Attester { return Attester{} }

// Tee returns "sample".
func (Attester) Tee() string { return "sample" }

// Evidence returns {"svn":"1","report_data":"<std b64 of reportData>"}.
func (Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sample evidence: %w", err)
	}
	if len(reportData) > MaxReportData {
		return nil, fmt.Errorf("sample evidence: report data is %d bytes, at most %d allowed", len(reportData), MaxReportData)
	}
	return json.Marshal(Evidence{SVN: "1", ReportData: base64.StdEncoding.EncodeToString(reportData)})
}
