package kbs

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
)

// Policy is a resource policy: an ordered list of rules, the first rule that
// matches a request decides, and the default decides when none does. It
// stands in for trustee's Rego resource policy (data.policy.allow) with the
// same inputs: the TEE that attested (from the token), the resource path and
// the query. The JSON format is described in the package documentation.
// A Policy is immutable.
type Policy struct {
	allowByDefault bool
	rules          []Rule
}

// Rule is one rule of a Policy. Empty patterns match anything.
type Rule struct {
	// Tee is a path.Match pattern for the TEE name ("sample", "tdx", ...).
	Tee string `json:"tee,omitempty"`
	// Resource is a path.Match pattern for "<repo>/<type>/<tag>"; "*" does
	// not match across "/".
	Resource string `json:"resource,omitempty"`
	// Query maps query parameter names to path.Match patterns; every one
	// must be present and match.
	Query map[string]string `json:"query,omitempty"`
	// Allow is the decision when the rule matches.
	Allow bool `json:"allow"`
}

// PolicyInput is what a Policy decides on.
type PolicyInput struct {
	Tee      string            // TEE name from the attestation token
	Resource string            // "<repo>/<type>/<tag>" as requested
	Query    map[string]string // query parameters (the last value of each)
}

// AllowAll returns a policy that releases every resource to every TEE
// (trustee's allow_all.rego).
func AllowAll() *Policy { return &Policy{allowByDefault: true} }

// DenyAll returns a policy that releases nothing (trustee's deny_all.rego).
func DenyAll() *Policy { return &Policy{} }

// NewPolicy returns a policy from rules, checking their patterns.
func NewPolicy(allowByDefault bool, rules ...Rule) (*Policy, error) {
	p := &Policy{allowByDefault: allowByDefault, rules: make([]Rule, len(rules))}
	for i, r := range rules {
		for _, pat := range append([]string{r.Tee, r.Resource}, values(r.Query)...) {
			if _, err := path.Match(pat, ""); err != nil {
				return nil, fmt.Errorf("policy rule %d: pattern %q: %w", i, pat, err)
			}
		}
		q := make(map[string]string, len(r.Query))
		for k, v := range r.Query {
			q[k] = v
		}
		r.Query = q
		p.rules[i] = r
	}
	return p, nil
}

func values(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// ParsePolicy parses a policy document. Unknown members, a missing "allow"
// in a rule, a "default" other than "allow" or "deny" and malformed
// patterns are errors.
func ParsePolicy(data []byte) (*Policy, error) {
	var doc struct {
		Default *string `json:"default"`
		Rules   []struct {
			Tee      string            `json:"tee"`
			Resource string            `json:"resource"`
			Query    map[string]string `json:"query"`
			Allow    *bool             `json:"allow"`
		} `json:"rules"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("parse policy: trailing data after the JSON document")
	}
	allow := false
	if doc.Default != nil {
		switch *doc.Default {
		case "allow":
			allow = true
		case "deny":
		default:
			return nil, fmt.Errorf("parse policy: default %q: want \"allow\" or \"deny\"", *doc.Default)
		}
	}
	rules := make([]Rule, len(doc.Rules))
	for i, r := range doc.Rules {
		if r.Allow == nil {
			return nil, fmt.Errorf("parse policy: rule %d has no \"allow\"", i)
		}
		rules[i] = Rule{Tee: r.Tee, Resource: r.Resource, Query: r.Query, Allow: *r.Allow}
	}
	p, err := NewPolicy(allow, rules...)
	if err != nil {
		return nil, fmt.Errorf("parse policy: %w", err)
	}
	return p, nil
}

// MarshalJSON writes the policy in the format ParsePolicy reads.
func (p *Policy) MarshalJSON() ([]byte, error) {
	def := "deny"
	if p.allowByDefault {
		def = "allow"
	}
	rules := p.rules
	if rules == nil {
		rules = []Rule{}
	}
	return json.Marshal(struct {
		Default string `json:"default"`
		Rules   []Rule `json:"rules"`
	}{def, rules})
}

// Allow reports whether the policy releases the resource. A nil policy
// denies.
func (p *Policy) Allow(in PolicyInput) bool {
	if p == nil {
		return false
	}
	for _, r := range p.rules {
		if r.matches(in) {
			return r.Allow
		}
	}
	return p.allowByDefault
}

func (r Rule) matches(in PolicyInput) bool {
	if !match(r.Tee, in.Tee) || !match(r.Resource, in.Resource) {
		return false
	}
	for k, pat := range r.Query {
		v, ok := in.Query[k]
		if !ok || !match(pat, v) {
			return false
		}
	}
	return true
}

func match(pattern, s string) bool {
	if pattern == "" {
		return true
	}
	ok, err := path.Match(pattern, s)
	return err == nil && ok
}
