// Package config owns everything guestd reads to configure itself: the
// kernel command line (and the environment variables that override it), the
// attestation-agent (AA) config file, the confidential-data-hub (CDH) config
// file with its [image] section, and kata's initdata (both the TOML document
// and the on-disk block device that carries it).
//
// Key names, defaults and precedence follow upstream guest-components and
// kata-agent so that existing deployments (kernel parameters, initdata
// aa.toml/cdh.toml) work unchanged. Every value is typed and validated when
// it is read; errors name the source (file, kernel command line or
// environment variable) and the key. Keys guestd does not know are not fatal:
// they are returned in an Unknown field as dotted paths for the caller to log.
//
// Where upstream components disagree or fail open, this package chooses the
// stricter reading and says so on the function concerned.
package config
