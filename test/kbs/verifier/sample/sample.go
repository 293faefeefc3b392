package sample

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

// Verifier verifies sample evidence: {"svn":"<string>","report_data":"<std
// base64>"}. It satisfies kbs.Verifier.
type Verifier struct{}

// New returns the sample verifier.
func New() Verifier { return Verifier{} }

// Verify checks that the evidence's report_data is the standard base64 of
// reportData, byte for byte (no padding or truncation, as trustee's sample
// verifier compares), and returns the claims trustee's sample verifier
// gives, except that report_data is hex like every other TEE's: svn,
// report_data, launch_digest, platform_version and debug.
func (Verifier) Verify(ctx context.Context, evidence json.RawMessage, reportData []byte) (map[string]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("sample evidence: %w", err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(evidence, &m); err != nil || m == nil {
		return nil, fmt.Errorf("sample evidence: not a JSON object: %.60s", evidence)
	}
	svn, err := str(m, "svn", true)
	if err != nil {
		return nil, err
	}
	// A missing report_data is "" (serde default), which then fails the
	// comparison unless the expected report data is empty too.
	rd, err := str(m, "report_data", false)
	if err != nil {
		return nil, err
	}
	got, err := decodeStd(rd)
	if err != nil {
		return nil, fmt.Errorf("sample evidence: report_data is not standard base64: %w", err)
	}
	if !bytes.Equal(got, reportData) {
		return nil, fmt.Errorf("sample evidence: report_data %s does not match the expected binding digest %s",
			hex.EncodeToString(got), hex.EncodeToString(reportData))
	}
	return map[string]any{
		"svn":              svn,
		"report_data":      hex.EncodeToString(got),
		"launch_digest":    "abcde",
		"platform_version": map[string]any{"major": 1, "minor": 4},
		"debug":            false,
	}, nil
}

func str(m map[string]json.RawMessage, key string, required bool) (string, error) {
	raw, ok := m[key]
	if !ok {
		if required {
			return "", fmt.Errorf("sample evidence: missing field `%s`", key)
		}
		return "", nil
	}
	var s string
	if len(bytes.TrimSpace(raw)) == 0 || bytes.TrimSpace(raw)[0] != '"' {
		return "", fmt.Errorf("sample evidence: `%s` is not a string", key)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("sample evidence: `%s`: %w", key, err)
	}
	return s, nil
}

// decodeStd decodes canonical standard base64 with padding, as the Rust
// base64 crate's STANDARD engine does: unlike encoding/base64 it takes no
// line breaks.
func decodeStd(s string) ([]byte, error) {
	if bytes.ContainsAny([]byte(s), "\r\n") {
		return nil, errors.New("line break in base64")
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}
