// Package tdx is the attester for Intel TDX guests. It owns getting a TD
// quote through a go-tdx-guest QuoteProvider (configfs-tsm, or the
// /dev/tdx_guest device where the kernel lacks it), reading the CC event
// log (CCEL) the firmware left in ACPI, and the evidence format trustee's
// TDX verifier takes.
package tdx
