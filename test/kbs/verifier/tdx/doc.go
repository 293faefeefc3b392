// Package tdx is the test KBS's verifier for TDX evidence. It owns
// checking a v4 TD quote in trustee's TDX evidence format with
// go-tdx-guest against a configured root certificate, without network
// access (no PCS collateral, so no TCB status), then the report data
// binding, and returns trustee's TDX claims.
package tdx
