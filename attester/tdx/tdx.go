package tdx

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/google/go-tdx-guest/client"

	"github.com/guestd/guestd/attester"
)

// ReportDataSize is the size of the TD report's REPORT_DATA field.
const ReportDataSize = 64

// DefaultCCELPath is where Linux exposes the CCEL ACPI table's event log.
const DefaultCCELPath = "/sys/firmware/acpi/tables/data/CCEL"

// Evidence is TDX evidence as trustee's TDX verifier deserializes it.
type Evidence struct {
	// CCEventlog is the standard base64 of the CC event log, or nil (JSON
	// null) when the machine has none.
	CCEventlog *string `json:"cc_eventlog"`
	// Quote is the standard base64 of the TD quote.
	Quote string `json:"quote"`
}

// Options configures an Attester.
type Options struct {
	// CCELPath is the event log file; empty means DefaultCCELPath. A
	// missing file gives a null cc_eventlog.
	CCELPath string
}

// Attester gets TDX evidence from a go-tdx-guest QuoteProvider.
type Attester struct {
	qp       client.QuoteProvider
	ccelPath string
}

// New returns an attester that gets quotes from qp and the event log from
// opts.CCELPath.
func New(qp client.QuoteProvider, opts Options) *Attester {
	path := opts.CCELPath
	if path == "" {
		path = DefaultCCELPath
	}
	return &Attester{qp: qp, ccelPath: path}
}

// Default returns an attester on this machine's TDX guest interface:
// configfs-tsm when the kernel has it for TDX, else the /dev/tdx_guest
// device.
func Default(opts Options) (*Attester, error) {
	tsm, err := client.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("open TDX configfs-tsm: %w", err)
	}
	tsmErr := tsm.IsSupported()
	if tsmErr == nil {
		return New(tsm, opts), nil
	}
	dev := deviceProvider{}
	if err := dev.IsSupported(); err != nil {
		return nil, fmt.Errorf("no TDX guest interface: configfs-tsm: %v; /dev/tdx_guest: %w", tsmErr, err)
	}
	return New(dev, opts), nil
}

// deviceProvider gets quotes through the /dev/tdx_guest ioctls.
type deviceProvider struct{}

func (deviceProvider) IsSupported() error {
	d, err := client.OpenDevice()
	if err != nil {
		return err
	}
	return d.Close()
}

func (deviceProvider) GetRawQuote(reportData [64]byte) ([]byte, error) {
	d, err := client.OpenDevice()
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return client.GetRawQuote(d, reportData)
}

// Tee returns "tdx".
func (*Attester) Tee() string { return "tdx" }

// Evidence returns the JSON evidence for reportData, which is zero-padded
// to 64 bytes; longer report data is an error.
func (a *Attester) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tdx evidence: %w", err)
	}
	rd, err := attester.Regularize(reportData, ReportDataSize, false)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: %w", err)
	}
	quote, err := a.qp.GetRawQuote([ReportDataSize]byte(rd))
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: get quote: %w", err)
	}
	got, err := QuoteReportData(quote)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: %w", err)
	}
	if !bytes.Equal(got, rd) {
		return nil, errors.New("tdx evidence: the quote provider returned a quote for other report data")
	}
	ev := Evidence{Quote: base64.StdEncoding.EncodeToString(quote)}
	ccel, err := os.ReadFile(a.ccelPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("tdx evidence: read event log %s: %w", a.ccelPath, err)
	default:
		s := base64.StdEncoding.EncodeToString(ccel)
		ev.CCEventlog = &s
	}
	out, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("tdx evidence: encode: %w", err)
	}
	return out, nil
}

// QuoteReportData returns the REPORT_DATA of a TD quote of version 4 or 5
// (TDX 1.0 or 1.5 body), without checking anything else.
func QuoteReportData(quote []byte) ([]byte, error) {
	if len(quote) < 2 {
		return nil, fmt.Errorf("TD quote is %d bytes", len(quote))
	}
	const header, rdOffset = 0x30, 0x208 // report data offset in the TD body
	var body int
	switch v := binary.LittleEndian.Uint16(quote); v {
	case 4:
		body = header
	case 5:
		if len(quote) < header+6 {
			return nil, fmt.Errorf("TD quote v5 is %d bytes", len(quote))
		}
		if t := binary.LittleEndian.Uint16(quote[header:]); t != 2 && t != 3 {
			return nil, fmt.Errorf("TD quote v5 body type %d is not a TD report", t)
		}
		body = header + 6
	default:
		return nil, fmt.Errorf("TD quote version %d unsupported (4 or 5)", v)
	}
	if len(quote) < body+rdOffset+ReportDataSize {
		return nil, fmt.Errorf("TD quote is %d bytes, too short for its report data", len(quote))
	}
	return quote[body+rdOffset : body+rdOffset+ReportDataSize], nil
}

// ParseEvidence decodes TDX evidence JSON into the raw quote and the raw
// event log (nil when cc_eventlog is null or absent).
func ParseEvidence(data []byte) (quote, ccel []byte, err error) {
	var ev struct {
		CCEventlog *string `json:"cc_eventlog"`
		Quote      *string `json:"quote"`
	}
	if err := json.Unmarshal(data, &ev); err != nil {
		return nil, nil, fmt.Errorf("parse tdx evidence: %w", err)
	}
	if ev.Quote == nil {
		return nil, nil, errors.New("parse tdx evidence: missing quote")
	}
	if quote, err = base64.StdEncoding.DecodeString(*ev.Quote); err != nil {
		return nil, nil, fmt.Errorf("parse tdx evidence: quote: %w", err)
	}
	if ev.CCEventlog != nil {
		if ccel, err = base64.StdEncoding.DecodeString(*ev.CCEventlog); err != nil {
			return nil, nil, fmt.Errorf("parse tdx evidence: cc_eventlog: %w", err)
		}
	}
	return quote, ccel, nil
}
