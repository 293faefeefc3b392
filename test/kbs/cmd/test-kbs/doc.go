// Command test-kbs runs the test KBS (package test/kbs) as a server: a
// conformant KBS protocol 0.4.0 implementation for demos, manual testing and
// black-box tests of guestd. It verifies evidence with the production
// verification libraries against the trust roots given on the command line;
// it is not a production KBS (sessions live in memory, the token signing key
// is ephemeral).
//
//	test-kbs --listen 127.0.0.1:0 --repo DIR --policy allow-all|deny-all|FILE
//	         [--admin-pubkey PEM] [--snp-roots PEM --snp-product NAME]
//	         [--tdx-root PEM] [--tpm-ak PEM] [--tls-cert PEM --tls-key PEM]
//	         [--addr-file FILE]
package main
