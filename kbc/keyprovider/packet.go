package keyprovider

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/guestd/guestd/kbc/resource"
)

// Names and values of the scheme.
const (
	// Name is the key provider's name: the ocicrypt parameter key
	// ("provider:attestation-agent:..." on skopeo's command line) and the
	// suffix of AnnotationID.
	Name = "attestation-agent"
	// Scheme is the name ocicrypt registers a provider's key wrapper under.
	Scheme = "provider." + Name
	// AnnotationID is the layer annotation holding the packets, each the
	// standard base64 of its JSON, several joined by ','.
	AnnotationID = "org.opencontainers.image.enc.keys.provider." + Name

	// PacketVersion is the only version 2 packets may carry.
	PacketVersion = "0.1.0"
	// ProviderKBS is the only KEK provider supported.
	ProviderKBS = "kbs"

	// A256GCM is AES-256-GCM with a 12-byte IV; wrapped_data is
	// ciphertext‖16-byte tag.
	A256GCM = "A256GCM"
	// A256CTR is AES-256-CTR (128-bit big-endian counter) with a 16-byte
	// IV. It does not authenticate.
	A256CTR = "A256CTR"

	// KEKSize is the size of a KEK in bytes.
	KEKSize = 32
)

// Errors wrapped by this package's errors.
var (
	// ErrMalformedPacket: the annotation is not a well-formed packet.
	ErrMalformedPacket = errors.New("malformed annotation packet")
	// ErrUnsupported: the packet names a provider, version or wrap type
	// this package does not implement.
	ErrUnsupported = errors.New("unsupported")
	// ErrAuthentication: the wrapped data does not decrypt under the KEK
	// (a wrong KEK, or tampered data).
	ErrAuthentication = errors.New("authentication failed")
)

// AnnotationPacket is one packet of the provider's layer annotation. The
// version 1 fields are KID, WrappedData, IV and WrapType; version 2 adds
// the others, all optional. ParsePacket reads both.
type AnnotationPacket struct {
	// Version is "" (version 1) or PacketVersion.
	Version string `json:"version,omitempty"`
	// KID names the KEK: a KBS resource URI (kbs:///repo/type/tag) for the
	// kbs provider.
	KID string `json:"kid"`
	// WrappedData is the wrapped private options (std base64 on the wire).
	WrappedData []byte `json:"wrapped_data"`
	// Provider is "" (meaning ProviderKBS) or the KEK provider.
	Provider string `json:"provider,omitempty"`
	// IV is the initialisation vector (std base64 on the wire).
	IV []byte `json:"iv,omitempty"`
	// WrapType is A256GCM or A256CTR.
	WrapType string `json:"wrap_type,omitempty"`
	// ProviderSettings and Annotations are the version 2 objects for KMS
	// providers, kept verbatim.
	ProviderSettings json.RawMessage `json:"provider_settings,omitempty"`
	Annotations      json.RawMessage `json:"annotations,omitempty"`
}

// ParsePacket parses a packet's JSON (the annotation after base64
// decoding). As upstream's serde-derived parser it matches member names
// exactly, rejects a member given twice or of the wrong type and ignores
// unknown members; kid and wrapped_data are required, the rest optional.
// It checks the shape only: Unwrapper checks version, provider, wrap type,
// IV size and kid.
func ParsePacket(data []byte) (AnnotationPacket, error) {
	m, err := members(data)
	if err != nil {
		return AnnotationPacket{}, fmt.Errorf("%w: %v", ErrMalformedPacket, err)
	}
	bad := func(format string, args ...any) (AnnotationPacket, error) {
		return AnnotationPacket{}, fmt.Errorf("%w: %s", ErrMalformedPacket, fmt.Sprintf(format, args...))
	}
	var p AnnotationPacket
	str := func(key string, required bool) (string, bool, error) {
		raw, ok := m[key]
		if !ok {
			if required {
				return "", false, fmt.Errorf("missing %q", key)
			}
			return "", false, nil
		}
		var s string
		if raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
			return "", false, fmt.Errorf("%q is not a string", key)
		}
		return s, true, nil
	}
	b64 := func(key string, required bool) ([]byte, error) {
		s, ok, err := str(key, required)
		if err != nil || !ok {
			return nil, err
		}
		b, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not standard base64: %v", key, err)
		}
		return b, nil
	}
	if p.Version, _, err = str("version", false); err != nil {
		return bad("%v", err)
	}
	if p.KID, _, err = str("kid", true); err != nil {
		return bad("%v", err)
	}
	if p.WrappedData, err = b64("wrapped_data", true); err != nil {
		return bad("%v", err)
	}
	if p.Provider, _, err = str("provider", false); err != nil {
		return bad("%v", err)
	}
	if p.IV, err = b64("iv", false); err != nil {
		return bad("%v", err)
	}
	if p.WrapType, _, err = str("wrap_type", false); err != nil {
		return bad("%v", err)
	}
	for _, key := range []string{"provider_settings", "annotations"} {
		raw, ok := m[key]
		if !ok {
			continue
		}
		if raw[0] != '{' {
			return bad("%q is not an object", key)
		}
		if key == "provider_settings" {
			p.ProviderSettings = raw
		} else {
			p.Annotations = raw
		}
	}
	return p, nil
}

// Marshal returns the packet's JSON, members in upstream's order; a
// version 1 packet marshals as coco_keyprovider writes it.
func (p AnnotationPacket) Marshal() ([]byte, error) {
	return json.Marshal(p)
}

// provider returns the effective provider.
func (p AnnotationPacket) provider() string {
	if p.Provider == "" {
		return ProviderKBS
	}
	return p.Provider
}

// KEKURI returns the KBS resource the kid names. Besides resource URIs
// (kbs:///repo/type/tag, kbs://host/..., kbs+plugin://...) it accepts
// "/repo/type/tag", which upstream coco_keyprovider writes when it was
// given no keyid.
func (p AnnotationPacket) KEKURI() (resource.URI, error) {
	return parseKID(p.KID)
}

func parseKID(kid string) (resource.URI, error) {
	if strings.HasPrefix(kid, "/") {
		return resource.FromPath(kid)
	}
	return resource.Parse(kid)
}

// members splits data, which must be exactly one JSON object, into its
// members, refusing duplicates.
func members(data []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	m := make(map[string]json.RawMessage)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not JSON: %v", err)
		}
		key := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("member %q: %v", key, err)
		}
		if _, dup := m[key]; dup {
			return nil, fmt.Errorf("duplicate member %q", key)
		}
		m[key] = raw
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	return m, nil
}

// splitAnnotation decodes a layer annotation value: packets in standard
// base64, joined by ','.
func splitAnnotation(value string) ([][]byte, error) {
	var out [][]byte
	for i, part := range strings.Split(value, ",") {
		b, err := base64.StdEncoding.DecodeString(part)
		if err != nil {
			return nil, fmt.Errorf("%w: annotation part %d is not standard base64", ErrMalformedPacket, i+1)
		}
		out = append(out, b)
	}
	return out, nil
}
