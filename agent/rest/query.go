package rest

import "strings"

// parseQuery decodes a raw query string as
// application/x-www-form-urlencoded, the way upstream's router reads it:
// pairs split on '&' only (';' is data), a pair without '=' has an empty
// value, '+' is a space, a malformed %-escape stays as written, and a later
// duplicate key wins. Unlike upstream, decoded bytes are kept as they are,
// valid UTF-8 or not.
func parseQuery(raw string) map[string]string {
	q := make(map[string]string)
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		q[unescapeForm(k)] = unescapeForm(v)
	}
	return q
}

// unescapeForm turns '+' into a space and each well-formed %HH into its
// byte, leaving everything else alone.
func unescapeForm(s string) string {
	if !strings.ContainsAny(s, "+%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b.WriteByte(' ')
		case c == '%' && i+2 < len(s) && isHexDigit(s[i+1]) && isHexDigit(s[i+2]):
			b.WriteByte(hexVal(s[i+1])<<4 | hexVal(s[i+2]))
			i += 2
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}
