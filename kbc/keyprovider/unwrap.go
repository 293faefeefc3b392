package keyprovider

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/containers/ocicrypt/config"
	"github.com/containers/ocicrypt/keywrap"

	"github.com/guestd/guestd/kbc"
)

// ErrNoKBC is wrapped by Unwrap's error when the Unwrapper has no KBC.
var ErrNoKBC = errors.New("no KBC configured")

// Unwrapper unwraps layer keys with KEKs fetched through a KBC. It is safe
// for concurrent use if its KBC is.
type Unwrapper struct {
	KBC kbc.Client
}

var _ keywrap.KeyWrapper = (*Unwrapper)(nil)

// Unwrap parses annotation (one packet's JSON, i.e. a base64-decoded part
// of the layer annotation), fetches the KEK the kid names and returns the
// decrypted private layer-cipher options. The caller owns the result (it
// holds the layer key: zero it after use). Errors name the kid and wrap
// ErrMalformedPacket, ErrUnsupported, ErrAuthentication, ErrNoKBC or the
// KBC's error.
func (u *Unwrapper) Unwrap(ctx context.Context, annotation []byte) ([]byte, error) {
	p, err := ParsePacket(annotation)
	if err != nil {
		return nil, fmt.Errorf("unwrap layer key: %w", err)
	}
	fail := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("unwrap layer key (kid %q): %w", p.KID, fmt.Errorf(format, args...))
	}
	if p.Version != "" && p.Version != PacketVersion {
		return fail("%w: packet version %q (want %q)", ErrUnsupported, p.Version, PacketVersion)
	}
	if prov := p.provider(); prov != ProviderKBS {
		return fail("%w: KEK provider %q (only %q is supported)", ErrUnsupported, prov, ProviderKBS)
	}
	if p.WrapType == "" {
		return fail("%w: no wrap_type", ErrMalformedPacket)
	}
	if p.IV == nil {
		return fail("%w: no iv", ErrMalformedPacket)
	}
	if _, err := ivSize(p.WrapType); err != nil {
		return fail("%w", err)
	}
	uri, err := p.KEKURI()
	if err != nil {
		return fail("%w: kid: %w", ErrMalformedPacket, err)
	}
	if u == nil || u.KBC == nil {
		return fail("fetch KEK: %w", ErrNoKBC)
	}
	kek, err := u.KBC.GetResource(ctx, uri)
	if err != nil {
		return fail("fetch KEK: %w", err)
	}
	defer clear(kek)
	if len(kek) != KEKSize {
		return fail("KEK %s is %d bytes, want %d", uri, len(kek), KEKSize)
	}
	plain, err := open(kek, p.WrappedData, p.IV, p.WrapType)
	if err != nil {
		return fail("decrypt with %s: %w", p.WrapType, err)
	}
	if p.WrapType == A256CTR && !json.Valid(plain) {
		// CTR does not authenticate: a wrong KEK shows as garbage.
		clear(plain)
		return fail("decrypt with %s: %w: the result is not the JSON private options (wrong KEK, or tampered data)", p.WrapType, ErrAuthentication)
	}
	return plain, nil
}

// UnwrapKey implements keywrap.KeyWrapper: it unwraps with
// context.Background() (the KBC bounds its own requests). dc is not used.
func (u *Unwrapper) UnwrapKey(_ *config.DecryptConfig, annotation []byte) ([]byte, error) {
	return u.Unwrap(context.Background(), annotation)
}

// WrapKeys implements keywrap.KeyWrapper. The guest side cannot wrap: it
// returns nil (nothing to add) unless the EncryptConfig asks for this
// provider, which is an error.
func (u *Unwrapper) WrapKeys(ec *config.EncryptConfig, _ []byte) ([]byte, error) {
	if ec == nil || ec.Parameters[Name] == nil {
		return nil, nil
	}
	return nil, errors.New("wrap layer key: the attestation-agent Unwrapper cannot wrap; use Wrapper")
}

// GetAnnotationID implements keywrap.KeyWrapper: AnnotationID.
func (u *Unwrapper) GetAnnotationID() string { return AnnotationID }

// NoPossibleKeys implements keywrap.KeyWrapper: true when there is no KBC.
func (u *Unwrapper) NoPossibleKeys(map[string][][]byte) bool { return u == nil || u.KBC == nil }

// GetPrivateKeys implements keywrap.KeyWrapper: KEKs are not exported.
func (u *Unwrapper) GetPrivateKeys(map[string][][]byte) [][]byte { return nil }

// GetKeyIdsFromPacket implements keywrap.KeyWrapper: the scheme has no
// numeric key ids.
func (u *Unwrapper) GetKeyIdsFromPacket(string) ([]uint64, error) { return nil, nil }

// GetRecipients implements keywrap.KeyWrapper: the kids of the packets in
// a layer annotation value.
func (u *Unwrapper) GetRecipients(annotation string) ([]string, error) {
	return recipients(annotation)
}

// recipients returns the kids of the packets in an annotation value.
func recipients(annotation string) ([]string, error) {
	parts, err := splitAnnotation(annotation)
	if err != nil {
		return nil, err
	}
	var kids []string
	for _, b := range parts {
		p, err := ParsePacket(b)
		if err != nil {
			return nil, err
		}
		kids = append(kids, p.KID)
	}
	return kids, nil
}
