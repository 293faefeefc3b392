package kbs

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/guestd/guestd/kbc/protocol"
)

// initDataFormat is the only init-data format trustee's built-in
// attestation service takes.
const initDataFormat = "toml"

// parsedInitData is what the attestation service learns from init-data: the
// digest of the document (under the algorithm the document names) and the
// claims it puts into the token.
type parsedInitData struct {
	digest []byte
	claims map[string]any
}

// parseInitData reads an init-data document as trustee's attestation
// service does: a TOML table with string "version", string "algorithm"
// (sha256, sha384 or sha512; sm3 is not supported here) and a [data] table
// of strings. The digest covers the whole body. The claims are the data
// table, where "aa.toml" and "cdh.toml" values that are TOML become tables,
// and a "policy.rego" that declares `policy_data := {...}` as its last
// statement is replaced by that JSON object under "agent_policy_claims".
func parseInitData(in *protocol.InitData) (*parsedInitData, error) {
	if in.Format != initDataFormat {
		return nil, fmt.Errorf("init-data format %q is not supported (want %q)", in.Format, initDataFormat)
	}
	var doc map[string]any
	if _, err := toml.Decode(in.Body, &doc); err != nil {
		return nil, fmt.Errorf("parse init-data TOML: %w", err)
	}
	if _, err := tomlString(doc, "version"); err != nil {
		return nil, err
	}
	algName, err := tomlString(doc, "algorithm")
	if err != nil {
		return nil, err
	}
	alg := protocol.HashAlgorithm(algName)
	switch alg {
	case protocol.SHA256, protocol.SHA384, protocol.SHA512:
	default:
		return nil, fmt.Errorf("init-data: algorithm %q is not supported (want sha256, sha384 or sha512)", algName)
	}
	rawData, ok := doc["data"]
	if !ok {
		return nil, errors.New("init-data: missing field `data`")
	}
	table, ok := rawData.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("init-data: `data` is a %T, want a table", rawData)
	}
	claims := make(map[string]any, len(table))
	for k, v := range table {
		s, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("init-data: data.%q is a %T, want a string", k, v)
		}
		claims[k] = s
	}
	for _, k := range []string{"aa.toml", "cdh.toml"} {
		s, ok := claims[k].(string)
		if !ok {
			continue
		}
		var sub map[string]any
		if _, err := toml.Decode(s, &sub); err == nil {
			claims[k] = jsonable(sub)
		}
	}
	if rego, ok := claims["policy.rego"].(string); ok {
		if pd, ok := policyData(rego); ok {
			delete(claims, "policy.rego")
			claims["agent_policy_claims"] = pd
		}
	}
	digest, err := alg.Sum([]byte(in.Body))
	if err != nil {
		return nil, fmt.Errorf("init-data digest: %w", err)
	}
	return &parsedInitData{digest: digest, claims: claims}, nil
}

func tomlString(doc map[string]any, key string) (string, error) {
	v, ok := doc[key]
	if !ok {
		return "", fmt.Errorf("init-data: missing field `%s`", key)
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("init-data: `%s` is a %T, want a string", key, v)
	}
	return s, nil
}

// policyData extracts the JSON object a Kata agent policy declares as
// `policy_data := {...}`; the object must run to the end of the file.
func policyData(rego string) (any, bool) {
	const decl = "policy_data := {"
	i := strings.Index(rego, decl)
	if i < 0 {
		return nil, false
	}
	var v any
	if err := json.Unmarshal([]byte(rego[i+len(decl)-1:]), &v); err != nil {
		return nil, false
	}
	return v, true
}

// jsonable turns a decoded TOML value into one that marshals to the JSON
// the Rust toml→serde_json conversion gives (tables become objects, arrays
// arrays, scalars themselves).
func jsonable(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = jsonable(e)
		}
		return out
	case []map[string]any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = jsonable(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = jsonable(e)
		}
		return out
	}
	return v
}
