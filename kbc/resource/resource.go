package resource

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DefaultPlugin is the plugin a plain kbs:// URI names.
const DefaultPlugin = "resource"

const (
	scheme     = "kbs"
	httpPrefix = "/kbs/v0/"
	segRule    = `^[A-Za-z0-9_-][A-Za-z0-9_.-]*$`
)

// URI is a parsed resource URI. The zero value is not valid; build one with
// Parse or FromPath, or fill the fields and call Validate.
type URI struct {
	// Plugin is the KBS plugin serving the resource: "resource" for kbs://,
	// <plugin> for kbs+<plugin>://.
	Plugin string
	// Host is the authority as written, "host" or "host:port" (IPv6 in
	// brackets), or "" as in kbs:///... . It is not used to route requests:
	// the KBS address comes from configuration.
	Host string
	// Segments are the path segments, at least one; exactly three
	// (repo, type, tag) for the resource plugin.
	Segments []string
	// Query is the raw query without the leading '?', "" for none. It is
	// forwarded to the KBS unchanged.
	Query string
}

// Error reports a string or URI that breaks a resource URI rule.
type Error struct {
	URI  string // the input, as given
	Rule string // the rule broken
}

func (e *Error) Error() string {
	return fmt.Sprintf("resource URI %q: %s", e.URI, e.Rule)
}

// Parse parses s as a resource URI and validates it.
func Parse(s string) (URI, error) {
	bad := func(format string, args ...any) (URI, error) {
		return URI{}, &Error{URI: s, Rule: fmt.Sprintf(format, args...)}
	}
	sch, rest, ok := strings.Cut(s, "://")
	if !ok {
		return bad(`missing "://" after the scheme`)
	}
	var u URI
	switch {
	case sch == scheme:
		u.Plugin = DefaultPlugin
	case strings.HasPrefix(sch, scheme+"+"):
		u.Plugin = sch[len(scheme)+1:]
		if u.Plugin == "" {
			return bad("scheme %q has an empty plugin name", sch)
		}
	default:
		return bad(`scheme %q is not "kbs" or "kbs+<plugin>"`, sch)
	}
	if strings.Contains(rest, "#") {
		return bad("fragments are not allowed")
	}
	rest, u.Query, _ = strings.Cut(rest, "?")
	auth, path, ok := strings.Cut(rest, "/")
	if !ok {
		return bad("missing path after the authority")
	}
	if strings.Contains(auth, "@") {
		return bad("userinfo is not allowed")
	}
	u.Host = auth
	u.Segments = strings.Split(path, "/")
	if rule := u.check(); rule != "" {
		return bad("%s", rule)
	}
	return u, nil
}

// FromPath returns the resource-plugin URI for a "repo/type/tag" path, the
// key offline KBCs and the REST API use. One leading '/' is accepted, as in
// the REST path /cdh/resource/<repo>/<type>/<tag>.
func FromPath(p string) (URI, error) {
	u := URI{Plugin: DefaultPlugin, Segments: strings.Split(strings.TrimPrefix(p, "/"), "/")}
	if rule := u.check(); rule != "" {
		return URI{}, &Error{URI: p, Rule: rule}
	}
	return u, nil
}

// Validate reports whether u obeys every rule Parse enforces. Code that
// takes a URI built by hand should call it before use.
func (u URI) Validate() error {
	if rule := u.check(); rule != "" {
		return &Error{URI: u.String(), Rule: rule}
	}
	return nil
}

// check returns the first rule u breaks, or "".
func (u URI) check() string {
	if !validName(u.Plugin) {
		return fmt.Sprintf("plugin name %q must match %s", u.Plugin, segRule)
	}
	if rule := checkHost(u.Host); rule != "" {
		return rule
	}
	if len(u.Segments) == 0 {
		return "missing path"
	}
	for i, s := range u.Segments {
		if !validName(s) {
			return fmt.Sprintf("path segment %d %q must match %s", i+1, s, segRule)
		}
	}
	if u.Plugin == DefaultPlugin && len(u.Segments) != 3 {
		return fmt.Sprintf("the resource plugin needs exactly 3 path segments (repo/type/tag), got %d", len(u.Segments))
	}
	if i := badQueryIndex(u.Query); i >= 0 {
		return fmt.Sprintf("query has an invalid character or escape at offset %d", i)
	}
	return ""
}

// String returns the canonical form: kbs:// for the resource plugin,
// kbs+<plugin>:// otherwise. Parsing it yields u again.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(scheme)
	if u.Plugin != DefaultPlugin {
		b.WriteString("+")
		b.WriteString(u.Plugin)
	}
	b.WriteString("://")
	b.WriteString(u.Host)
	b.WriteString("/")
	b.WriteString(u.Path())
	if u.Query != "" {
		b.WriteString("?")
		b.WriteString(u.Query)
	}
	return b.String()
}

// Path returns the segments joined by '/', e.g. "repo/type/tag": the key
// offline KBCs look resources up by.
func (u URI) Path() string {
	return strings.Join(u.Segments, "/")
}

// HTTPPath returns the KBS request path and query for u:
// /kbs/v0/<plugin>/<segments>[?<query>].
func (u URI) HTTPPath() string {
	p := httpPrefix + u.Plugin + "/" + u.Path()
	if u.Query != "" {
		p += "?" + u.Query
	}
	return p
}

// MarshalText returns the canonical form, so a URI can sit in JSON or TOML
// as a string, as upstream serialises it.
func (u URI) MarshalText() ([]byte, error) {
	if err := u.Validate(); err != nil {
		return nil, err
	}
	return []byte(u.String()), nil
}

// UnmarshalText parses text with Parse.
func (u *URI) UnmarshalText(text []byte) error {
	v, err := Parse(string(text))
	if err != nil {
		return err
	}
	*u = v
	return nil
}

// validName reports whether s matches ^[A-Za-z0-9_-][A-Za-z0-9_.-]*$.
func validName(s string) bool {
	if s == "" || s[0] == '.' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '_' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// checkHost accepts "", a registered name or IPv4 address of unreserved
// characters, or a bracketed IPv6 address, each with an optional port.
func checkHost(h string) string {
	if h == "" {
		return ""
	}
	host, port := h, ""
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return fmt.Sprintf("host %q has an unclosed '['", h)
		}
		a, err := netip.ParseAddr(h[1:end])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return fmt.Sprintf("host %q is not a bracketed IPv6 address", h)
		}
		host, port = h[:end+1], h[end+1:]
		if port != "" {
			if port[0] != ':' {
				return fmt.Sprintf("host %q has characters after ']'", h)
			}
			port = port[1:]
			if port == "" {
				return fmt.Sprintf("host %q has an empty port", h)
			}
		}
	} else {
		if i := strings.IndexByte(h, ':'); i >= 0 {
			host, port = h[:i], h[i+1:]
			if port == "" {
				return fmt.Sprintf("host %q has an empty port", h)
			}
		}
		if host == "" {
			return fmt.Sprintf("host %q has a port but no host name", h)
		}
		for i := 0; i < len(host); i++ {
			c := host[i]
			if !isAlnum(c) && c != '-' && c != '.' && c != '_' && c != '~' {
				return fmt.Sprintf("host %q has a character outside [A-Za-z0-9._~-]", h)
			}
		}
	}
	if port != "" && !validPort(port) {
		return fmt.Sprintf("host %q has a port that is not a number from 0 to 65535", h)
	}
	return ""
}

// validPort reports whether p is 1 to 5 decimal digits of value at most
// 65535.
func validPort(p string) bool {
	if len(p) == 0 || len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	n, err := strconv.Atoi(p)
	return err == nil && n <= 65535
}

// badQueryIndex returns the offset of the first byte of q that is not an
// RFC 3986 query character or a well-formed %HH escape, or -1.
func badQueryIndex(q string) int {
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case isAlnum(c), strings.IndexByte("-._~!$&'()*+,;=:@/?", c) >= 0:
		case c == '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return i
			}
			i += 2
		default:
			return i
		}
	}
	return -1
}
