package keyprovider

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"

	"github.com/guestd/guestd/kbc/resource"
)

// ParamKEK is the EncryptConfig/DecryptConfig parameter that carries a KEK
// to Wrapper in-process (see EncryptParameters). It never leaves the
// process: Server ignores it, and ocicrypt passes parameters only to
// in-process key wrappers and to the key provider a parameter is named
// after (the ':' keeps it from being a provider name skopeo can address).
const ParamKEK = "guestd:" + Name + "-kek"

// Params are coco_keyprovider's WrapKey parameters, the part after
// "provider:attestation-agent:" on skopeo's command line:
// key=value pairs joined by "::".
type Params struct {
	// KeyID is the kid (keyid=): a KBS resource URI, or /repo/type/tag.
	KeyID string
	// KeyPath is a file holding the 32-byte KEK (keypath=), read by Server.
	KeyPath string
	// Algorithm is the wrap type (algorithm=), A256GCM or A256CTR.
	Algorithm string
	// Sample asks for upstream's sample mode (sample=true), which Server
	// refuses.
	Sample bool
}

// ParseParams parses one parameter string. "Enabled", what ocicrypt
// passes for a bare "provider:attestation-agent", and "" mean no
// parameters. Unknown keys, fields without '=' and repeated keys are
// errors (upstream ignores them, which hides typos).
func ParseParams(s string) (Params, error) {
	var p Params
	if s == "" || s == "Enabled" {
		return p, nil
	}
	seen := map[string]bool{}
	for field := range strings.SplitSeq(s, "::") {
		if field == "" {
			continue
		}
		k, v, ok := strings.Cut(field, "=")
		if !ok {
			return Params{}, fmt.Errorf("parameter %q is not key=value", field)
		}
		if seen[k] {
			return Params{}, fmt.Errorf("parameter %q given twice", k)
		}
		seen[k] = true
		switch k {
		case "keyid":
			p.KeyID = v
		case "keypath":
			p.KeyPath = v
		case "algorithm":
			if _, err := ivSize(v); err != nil {
				return Params{}, fmt.Errorf("parameter algorithm: %w", err)
			}
			p.Algorithm = v
		case "sample":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Params{}, fmt.Errorf("parameter sample=%q is not a boolean", v)
			}
			p.Sample = b
		default:
			return Params{}, fmt.Errorf("unknown parameter %q (want keyid, keypath, algorithm or sample)", k)
		}
	}
	return p, nil
}

// String returns the parameter string ParseParams reads (without sample
// when false).
func (p Params) String() string {
	var f []string
	if p.KeyID != "" {
		f = append(f, "keyid="+p.KeyID)
	}
	if p.KeyPath != "" {
		f = append(f, "keypath="+p.KeyPath)
	}
	if p.Algorithm != "" {
		f = append(f, "algorithm="+p.Algorithm)
	}
	if p.Sample {
		f = append(f, "sample=true")
	}
	return strings.Join(f, "::")
}

// EncryptParameters returns ocicrypt EncryptConfig parameters that make a
// registered Wrapper wrap layer keys under kek with kid and algorithm (""
// for A256GCM). The map holds kek itself, not a copy: zeroing kek after
// the encryption zeroes it there too. Use them as
// config.EncryptConfig{Parameters: EncryptParameters(...)}.
func EncryptParameters(kek []byte, kid, algorithm string) map[string][][]byte {
	return map[string][][]byte{
		Name:     {[]byte(Params{KeyID: kid, Algorithm: algorithm}.String())},
		ParamKEK: {kek},
	}
}

// Wrapper wraps layer keys under a KEK into version 1 packets, as
// coco_keyprovider does. Used through ocicrypt (WrapKeys), the KEK, kid and
// algorithm come from the EncryptConfig parameters (EncryptParameters),
// falling back to the fields; Wrap uses the fields only. A Wrapper is
// read-only after construction and safe for concurrent use.
type Wrapper struct {
	// KEK is the 32-byte key-encryption key.
	KEK []byte
	// KID names the KEK in the KBS: kbs:///repo/type/tag (or
	// /repo/type/tag, written out as kbs:///repo/type/tag).
	KID string
	// Algorithm is A256GCM (the default when "") or A256CTR.
	Algorithm string
}

var _ keywrap.KeyWrapper = (*Wrapper)(nil)

// Wrap encrypts the private layer-cipher options optsData under w.KEK with
// a fresh random IV and returns the packet's JSON.
func (w *Wrapper) Wrap(optsData []byte) ([]byte, error) {
	return wrap(w.KEK, w.KID, w.Algorithm, optsData)
}

func wrap(kek []byte, kid, algorithm string, optsData []byte) ([]byte, error) {
	if kid == "" {
		return nil, errors.New("wrap layer key: no kid")
	}
	uri, err := parseKID(kid)
	if err != nil {
		return nil, fmt.Errorf("wrap layer key: kid: %w", err)
	}
	if algorithm == "" {
		algorithm = A256GCM
	}
	wrapped, iv, err := seal(kek, optsData, algorithm)
	if err != nil {
		return nil, fmt.Errorf("wrap layer key (kid %q): %w", uri.String(), err)
	}
	return AnnotationPacket{KID: uri.String(), WrappedData: wrapped, IV: iv, WrapType: algorithm}.Marshal()
}

// WrapKeys implements keywrap.KeyWrapper. It returns nil (nothing to add)
// unless ec has the attestation-agent parameter; then it wraps optsData
// into one packet with the KEK of the ParamKEK parameter (or w.KEK), the
// keyid and algorithm of the attestation-agent parameter (or w.KID,
// w.Algorithm). A keypath parameter is an error: only Server reads KEK
// files.
func (w *Wrapper) WrapKeys(ec *config.EncryptConfig, optsData []byte) ([]byte, error) {
	if ec == nil || ec.Parameters[Name] == nil {
		return nil, nil
	}
	raw := ec.Parameters[Name]
	if len(raw) != 1 {
		return nil, fmt.Errorf("wrap layer key: %d %s parameters, want one", len(raw), Name)
	}
	p, err := ParseParams(string(raw[0]))
	if err != nil {
		return nil, fmt.Errorf("wrap layer key: %w", err)
	}
	if p.Sample || p.KeyPath != "" {
		return nil, errors.New("wrap layer key: sample and keypath are not supported in-process; pass the KEK with EncryptParameters")
	}
	kek := w.KEK
	if k := ec.Parameters[ParamKEK]; k != nil {
		if len(k) != 1 {
			return nil, fmt.Errorf("wrap layer key: %d KEK parameters, want one", len(k))
		}
		kek = k[0]
	}
	if kek == nil {
		return nil, errors.New("wrap layer key: no KEK (neither in the EncryptConfig nor in the Wrapper)")
	}
	kid, alg := w.KID, w.Algorithm
	if p.KeyID != "" {
		kid = p.KeyID
	}
	if p.Algorithm != "" {
		alg = p.Algorithm
	}
	return wrap(kek, kid, alg, optsData)
}

// UnwrapKey implements keywrap.KeyWrapper for the tenant: it unwraps a
// packet with the KEK of dc's ParamKEK parameter (or w.KEK), without a KBS.
func (w *Wrapper) UnwrapKey(dc *config.DecryptConfig, annotation []byte) ([]byte, error) {
	kek := w.KEK
	if dc != nil {
		if k := dc.Parameters[ParamKEK]; len(k) == 1 {
			kek = k[0]
		}
	}
	if kek == nil {
		return nil, errors.New("unwrap layer key: no KEK in the DecryptConfig or the Wrapper")
	}
	return (&Unwrapper{KBC: staticKBC(kek)}).Unwrap(context.Background(), annotation)
}

// GetAnnotationID implements keywrap.KeyWrapper: AnnotationID.
func (w *Wrapper) GetAnnotationID() string { return AnnotationID }

// NoPossibleKeys implements keywrap.KeyWrapper: true when neither dc nor
// w holds a KEK.
func (w *Wrapper) NoPossibleKeys(dc map[string][][]byte) bool {
	return w.KEK == nil && len(dc[ParamKEK]) != 1
}

// GetPrivateKeys implements keywrap.KeyWrapper: KEKs are not exported.
func (w *Wrapper) GetPrivateKeys(map[string][][]byte) [][]byte { return nil }

// GetKeyIdsFromPacket implements keywrap.KeyWrapper: no numeric key ids.
func (w *Wrapper) GetKeyIdsFromPacket(string) ([]uint64, error) { return nil, nil }

// GetRecipients implements keywrap.KeyWrapper: the kids of the packets in
// a layer annotation value.
func (w *Wrapper) GetRecipients(annotation string) ([]string, error) {
	return recipients(annotation)
}

// staticKBC serves one KEK for every kid: the tenant already holds it.
type staticKBC []byte

func (k staticKBC) GetResource(context.Context, resource.URI) ([]byte, error) {
	return append([]byte(nil), k...), nil
}
