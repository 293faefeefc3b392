package tpm

import (
	"crypto/rsa"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultAKHandle is the persistent handle upstream looks for the AK at
// (upstream env AA_TPM_AK_HANDLE overrides it).
const DefaultAKHandle uint32 = 0x81010002

// Persistent handle ranges (TPM 2.0 Part 2, 7.5): the TPM keeps objects
// across restarts only at 0x81xxxxxx; the owner may evict into the lower
// half.
const (
	persistentFirst      = 0x81000000
	persistentLast       = 0x81FFFFFF
	ownerPersistentLast  = 0x817FFFFF
	persistentHandleMask = 0xFF000000
)

// akTemplate is the AK created when none is persisted: a restricted RSA-2048
// signing key with scheme RSASSA-SHA256, the key type trustee's verifier
// takes (it accepts RSASSA signatures only) and the one upstream provisions
// (tpm2_createak -G rsa -g sha256 -s rsassa). The template equals go-tpm-
// tools' AKTemplateRSA, so the owner hierarchy derives the same key from it
// as client.AttestationKeyRSA does.
func akTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTRSAScheme{
				Scheme:  tpm2.TPMAlgRSASSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgRSASSA, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			KeyBits: 2048,
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{}),
	}
}

// ak is the attestation key as loaded in the TPM.
type ak struct {
	handle tpm2.TPMHandle
	name   tpm2.TPM2BName
	pub    *rsa.PublicKey
	// transient is set when the AK could not be persisted and lives in a
	// transient slot that must be flushed.
	transient bool
	// created is set when this attester created the AK.
	created bool
}

// loadAK returns the AK at the persistent handle, creating and persisting
// one if the handle is empty. An unsuitable key at the handle is an error;
// it is never evicted.
func loadAK(t transport.TPM, handle uint32) (ak, error) {
	if handle&persistentHandleMask != persistentFirst&persistentHandleMask {
		return ak{}, fmt.Errorf("AK handle %#x is not a persistent handle (0x81000000-0x81ffffff)", handle)
	}
	rp, err := tpm2.ReadPublic{ObjectHandle: tpm2.TPMHandle(handle)}.Execute(t)
	if err == nil {
		pub, err := akPublic(&rp.OutPublic)
		if err != nil {
			return ak{}, fmt.Errorf("use key at persistent handle %#x as AK: %w", handle, err)
		}
		return ak{handle: tpm2.TPMHandle(handle), name: rp.Name, pub: pub}, nil
	}
	if !errors.Is(err, tpm2.TPMRCHandle) {
		return ak{}, fmt.Errorf("read AK at persistent handle %#x: %w", handle, err)
	}
	return createAK(t, handle)
}

// createAK creates the AK as a primary key of the owner hierarchy and tries
// to persist it at handle. If persisting fails (handle outside the owner
// range, owner authorization set, NV full) the transient key is used.
func createAK(t transport.TPM, handle uint32) (ak, error) {
	cp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(akTemplate()),
	}.Execute(t)
	if err != nil {
		return ak{}, fmt.Errorf("create AK in owner hierarchy (to provision one instead, persist an RSA AK at %#x): %w", handle, err)
	}
	pub, err := akPublic(&cp.OutPublic)
	if err != nil {
		flush(t, cp.ObjectHandle)
		return ak{}, fmt.Errorf("create AK: %w", err)
	}
	k := ak{handle: cp.ObjectHandle, name: cp.Name, pub: pub, transient: true, created: true}
	if handle > ownerPersistentLast {
		return k, nil
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		ObjectHandle:     tpm2.NamedHandle{Handle: cp.ObjectHandle, Name: cp.Name},
		PersistentHandle: tpm2.TPMHandle(handle),
	}.Execute(t)
	if err != nil {
		return k, nil
	}
	flush(t, cp.ObjectHandle)
	// The persistent object has the same public area, hence the same name.
	return ak{handle: tpm2.TPMHandle(handle), name: cp.Name, pub: pub, created: true}, nil
}

// akPublic checks that pub is usable as an AK whose quotes trustee can
// verify, and returns its RSA key.
func akPublic(pub2b *tpm2.TPM2BPublic) (*rsa.PublicKey, error) {
	pub, err := pub2b.Contents()
	if err != nil {
		return nil, fmt.Errorf("decode public area: %w", err)
	}
	if pub.Type != tpm2.TPMAlgRSA {
		return nil, fmt.Errorf("key type %#04x is not RSA (trustee verifies RSASSA quotes only)", uint16(pub.Type))
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt {
		return nil, errors.New("not a restricted signing key")
	}
	if !a.UserWithAuth {
		return nil, errors.New("key needs policy authorization, which guestd does not support")
	}
	detail, err := pub.Parameters.RSADetail()
	if err != nil {
		return nil, fmt.Errorf("decode RSA parameters: %w", err)
	}
	switch detail.Scheme.Scheme {
	case tpm2.TPMAlgNull:
	case tpm2.TPMAlgRSASSA:
		s, err := detail.Scheme.Details.RSASSA()
		if err != nil {
			return nil, fmt.Errorf("decode RSA scheme: %w", err)
		}
		if s.HashAlg != tpm2.TPMAlgSHA256 {
			return nil, fmt.Errorf("RSASSA hash %#04x is not SHA-256", uint16(s.HashAlg))
		}
	default:
		return nil, fmt.Errorf("signing scheme %#04x is not RSASSA", uint16(detail.Scheme.Scheme))
	}
	unique, err := pub.Unique.RSA()
	if err != nil {
		return nil, fmt.Errorf("decode RSA modulus: %w", err)
	}
	return tpm2.RSAPub(detail, unique)
}

// flush releases a transient object; failures only leak a slot the TPM
// frees at the next restart, so they are not reported.
func flush(t transport.TPM, h tpm2.TPMHandle) {
	tpm2.FlushContext{FlushHandle: h}.Execute(t)
}
