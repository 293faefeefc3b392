// Package tdxfake is a fake TDX quoting enclave for tests. It owns a
// freshly generated test PCK certificate chain (a root named like Intel's
// SGX Root CA, a PCK Platform CA and a PCK certificate carrying the real
// PCK's SGX extensions) and re-signs go-tdx-guest's canned real TDX quote
// (v4) under it for any report data, so that go-tdx-guest's verifier
// accepts the quote with the fake root as its trusted root and rejects it
// with Intel's.
//
// Only tests may import it: never cmd/ or production packages.
package tdxfake
