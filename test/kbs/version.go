package kbs

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/guestd/guestd/kbc/protocol"
)

// checkVersion applies trustee's rule to a Request's version: parse it as a
// semantic version (as the Rust semver crate does: no leading zeros, no
// whitespace, no "v") and match it against the requirement "=0.4.0". As in
// the semver crate, build metadata takes no part in the match, so
// "0.4.0+anything" is accepted; a pre-release ("0.4.0-rc1") is not.
func checkVersion(v string) error {
	got, err := parseSemver(v)
	if err != nil {
		return fmt.Errorf("failed to parse KBS version %q: %w", v, err)
	}
	want, err := parseSemver(protocol.Version)
	if err != nil {
		return fmt.Errorf("protocol version %q: %w", protocol.Version, err)
	}
	if got.major != want.major || got.minor != want.minor || got.patch != want.patch || got.pre != "" {
		return fmt.Errorf("KBS Client Protocol Version Mismatch: expect =%s while the request is %s", protocol.Version, v)
	}
	return nil
}

type semver struct {
	major, minor, patch uint64
	pre, build          string
}

func parseSemver(s string) (semver, error) {
	var v semver
	if s == "" {
		return v, errors.New("empty string, expected a semver version")
	}
	core := s
	if i := strings.IndexByte(core, '+'); i >= 0 {
		core, v.build = core[:i], core[i+1:]
		if err := identifiers(v.build, "build metadata", false); err != nil {
			return v, err
		}
	}
	if i := strings.IndexByte(core, '-'); i >= 0 {
		core, v.pre = core[:i], core[i+1:]
		if err := identifiers(v.pre, "pre-release", true); err != nil {
			return v, err
		}
	}
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return v, fmt.Errorf("%q is not major.minor.patch", core)
	}
	for i, name := range []string{"major", "minor", "patch"} {
		n, err := number(parts[i], name+" version number")
		if err != nil {
			return v, err
		}
		switch i {
		case 0:
			v.major = n
		case 1:
			v.minor = n
		case 2:
			v.patch = n
		}
	}
	return v, nil
}

func number(s, what string) (uint64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty %s", what)
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("unexpected character %q in %s", c, what)
		}
	}
	if len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("invalid leading zero in %s", what)
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q: value out of range", what, s)
	}
	return n, nil
}

// identifiers checks dot-separated pre-release or build identifiers.
func identifiers(s, what string, noLeadingZero bool) error {
	for _, id := range strings.Split(s, ".") {
		if id == "" {
			return fmt.Errorf("empty identifier segment in %s", what)
		}
		numeric := true
		for _, c := range id {
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				numeric = false
			default:
				return fmt.Errorf("unexpected character %q in %s", c, what)
			}
		}
		if noLeadingZero && numeric && len(id) > 1 && id[0] == '0' {
			return fmt.Errorf("invalid leading zero in %s identifier", what)
		}
	}
	return nil
}
