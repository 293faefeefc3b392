package imagepull

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"go.podman.io/image/v5/signature"

	"github.com/guestd/guestd/kbc"
)

// pathToData maps a policy member naming a file to the member that carries
// the same bytes inline (containers-policy.json(5)); arrays map likewise.
var pathToData = map[string]string{
	"keyPath":             "keyData",
	"keyPaths":            "keyDatas",
	"caPath":              "caData",
	"rekorPublicKeyPath":  "rekorPublicKeyData",
	"rekorPublicKeyPaths": "rekorPublicKeyDatas",
	"caRootsPath":         "caRootsData",
	"caIntermediatesPath": "caIntermediatesData",
}

// loadPolicy parses a containers-policy.json document after replacing every
// key or certificate path that is a KBS resource URI with the resource's
// bytes inline, so keys fetched from the KBS never touch the disk. It also
// accepts two forms image-rs accepts and containers/image does not: a
// sigstoreSigned keyData holding the PEM text itself rather than its base64,
// and a policy without "transports".
func loadPolicy(ctx context.Context, client kbc.Client, data []byte) (*signature.Policy, error) {
	var doc map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("image security policy is not JSON: %w", err)
	}
	if err := inlineKeys(ctx, client, doc); err != nil {
		return nil, err
	}
	if _, ok := doc["transports"]; !ok {
		doc["transports"] = map[string]any{}
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	p, err := signature.NewPolicyFromBytes(raw)
	if err != nil {
		return nil, fmt.Errorf("image security policy: %w", err)
	}
	return p, nil
}

// inlineKeys walks the policy and rewrites KBS-hosted paths in place.
func inlineKeys(ctx context.Context, client kbc.Client, v any) error {
	switch v := v.(type) {
	case map[string]any:
		if v["type"] == "sigstoreSigned" {
			pemToBase64(v, "keyData")
		}
		for key, val := range v {
			dataKey, isPath := pathToData[key]
			if !isPath {
				if err := inlineKeys(ctx, client, val); err != nil {
					return err
				}
				continue
			}
			switch p := val.(type) {
			case string:
				if !isKBS(p) {
					continue
				}
				b, err := fetchResource(ctx, client, p)
				if err != nil {
					return fmt.Errorf("image security policy %s: %w", key, err)
				}
				delete(v, key)
				v[dataKey] = base64.StdEncoding.EncodeToString(b)
			case []any:
				var datas []any
				for _, e := range p {
					s, ok := e.(string)
					if !ok || !isKBS(s) {
						datas = nil
						break
					}
					b, err := fetchResource(ctx, client, s)
					if err != nil {
						return fmt.Errorf("image security policy %s: %w", key, err)
					}
					datas = append(datas, base64.StdEncoding.EncodeToString(b))
				}
				if datas != nil {
					delete(v, key)
					v[dataKey] = datas
				}
			}
		}
	case []any:
		for _, e := range v {
			if err := inlineKeys(ctx, client, e); err != nil {
				return err
			}
		}
	}
	return nil
}

func isKBS(s string) bool { return strings.HasPrefix(s, "kbs://") || strings.HasPrefix(s, "kbs+") }

// pemToBase64 converts a member holding raw PEM text (image-rs's form for
// sigstoreSigned keyData) into base64, containers/image's form.
func pemToBase64(m map[string]any, key string) {
	if s, ok := m[key].(string); ok && strings.HasPrefix(strings.TrimSpace(s), "-----BEGIN") {
		m[key] = base64.StdEncoding.EncodeToString([]byte(s))
	}
}
