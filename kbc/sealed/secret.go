package sealed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Format constants.
const (
	// Prefix starts every sealed secret.
	Prefix = "sealed."
	// Version is the only payload version.
	Version = "0.1.0"
	// DefaultKeyDir is where the CDH provisions verification keys.
	DefaultKeyDir = "/run/confidential-containers/cdh/sealed-secret"

	TypeVault    = "vault"
	TypeEnvelope = "envelope"

	// ProviderKBS is the provider that fetches through the KBC.
	ProviderKBS = "kbs"

	// Envelope wrap types.
	A256GCM = "A256GCM"
	A256CTR = "A256CTR"
)

// Error classes, wrapped by the package's errors.
var (
	// ErrMalformed: the sealed secret does not parse.
	ErrMalformed = errors.New("malformed sealed secret")
	// ErrVerification: the signature, or its key, does not check out.
	ErrVerification = errors.New("sealed secret verification failed")
	// ErrUnsupported: a well-formed secret this package cannot unseal
	// (version, type, algorithm or provider).
	ErrUnsupported = errors.New("unsupported sealed secret")
)

// Secret is a sealed secret's payload: exactly one of Vault and Envelope.
type Secret struct {
	Version  string
	Vault    *Vault
	Envelope *Envelope
}

// Vault points to a secret held by a provider.
type Vault struct {
	Provider         string         `json:"provider"`
	Name             string         `json:"name"`
	ProviderSettings map[string]any `json:"provider_settings"`
	Annotations      map[string]any `json:"annotations"`
}

// Envelope is a secret encrypted under a data key that the provider's key
// (KeyID) encrypts. The binary fields are standard base64, as on the wire.
type Envelope struct {
	Provider         string         `json:"provider"`
	KeyID            string         `json:"key_id"`
	EncryptedKey     string         `json:"encrypted_key"`
	EncryptedData    string         `json:"encrypted_data"`
	WrapType         string         `json:"wrap_type"`
	IV               string         `json:"iv"`
	ProviderSettings map[string]any `json:"provider_settings"`
	Annotations      map[string]any `json:"annotations"`
}

// MarshalJSON writes the payload as upstream: the type's fields flattened
// beside "version" and "type", absent maps as {}.
func (s Secret) MarshalJSON() ([]byte, error) {
	var typ string
	var body any
	switch {
	case s.Vault != nil && s.Envelope == nil:
		v := *s.Vault
		v.ProviderSettings, v.Annotations = orEmpty(v.ProviderSettings), orEmpty(v.Annotations)
		typ, body = TypeVault, v
	case s.Envelope != nil && s.Vault == nil:
		e := *s.Envelope
		e.ProviderSettings, e.Annotations = orEmpty(e.ProviderSettings), orEmpty(e.Annotations)
		typ, body = TypeEnvelope, e
	default:
		return nil, errors.New("encode sealed secret: exactly one of Vault and Envelope must be set")
	}
	head, err := json.Marshal(struct {
		Version string `json:"version"`
		Type    string `json:"type"`
	}{s.Version, typ})
	if err != nil {
		return nil, err
	}
	fields, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode sealed secret: %w", err)
	}
	// Splice {"version":..,"type":..} and {fields...} into one object.
	out := append(head[:len(head)-1], ',')
	return append(out, fields[1:]...), nil
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// required lists each type's fields that must be present as strings.
var required = map[string][]string{
	TypeVault:    {"provider", "name"},
	TypeEnvelope: {"provider", "key_id", "encrypted_key", "encrypted_data", "wrap_type", "iv"},
}

// UnmarshalJSON parses a payload. Unknown fields are ignored, as upstream.
// Errors wrap ErrMalformed.
func (s *Secret) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return fmt.Errorf("%w: payload is not a JSON object: %w", ErrMalformed, err)
	}
	str := func(name string) (string, error) {
		raw, ok := fields[name]
		if !ok {
			return "", fmt.Errorf("%w: payload has no %q", ErrMalformed, name)
		}
		var v string
		if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, &v) != nil {
			return "", fmt.Errorf("%w: payload %q is not a string", ErrMalformed, name)
		}
		return v, nil
	}
	version, err := str("version")
	if err != nil {
		return err
	}
	typ, err := str("type")
	if err != nil {
		return err
	}
	names, ok := required[typ]
	if !ok {
		return fmt.Errorf("%w: payload type %q (want %q or %q)", ErrUnsupported, typ, TypeVault, TypeEnvelope)
	}
	for _, n := range names {
		if _, err := str(n); err != nil {
			return err
		}
	}
	obj := func(name string) (map[string]any, error) {
		raw, ok := fields[name]
		if !ok || bytes.Equal(raw, []byte("null")) {
			return nil, nil
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%w: payload %q is not a JSON object", ErrMalformed, name)
		}
		return m, nil
	}
	settings, err := obj("provider_settings")
	if err != nil {
		return err
	}
	annotations, err := obj("annotations")
	if err != nil {
		return err
	}
	// Field names match exactly (encoding/json's struct decoding would
	// also take "Name" or "NAME").
	get := func(name string) string { v, _ := str(name); return v }
	out := Secret{Version: version}
	if typ == TypeVault {
		out.Vault = &Vault{Provider: get("provider"), Name: get("name"),
			ProviderSettings: settings, Annotations: annotations}
	} else {
		out.Envelope = &Envelope{Provider: get("provider"), KeyID: get("key_id"),
			EncryptedKey: get("encrypted_key"), EncryptedData: get("encrypted_data"),
			WrapType: get("wrap_type"), IV: get("iv"),
			ProviderSettings: settings, Annotations: annotations}
	}
	*s = out
	return nil
}
