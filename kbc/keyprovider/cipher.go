package keyprovider

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
)

// ivSize returns the IV size of a wrap type.
func ivSize(wrapType string) (int, error) {
	switch wrapType {
	case A256GCM:
		return 12, nil
	case A256CTR:
		return aes.BlockSize, nil
	}
	return 0, fmt.Errorf("%w: wrap type %q (want %s or %s)", ErrUnsupported, wrapType, A256GCM, A256CTR)
}

// seal encrypts plain under kek with wrapType and a fresh random IV.
func seal(kek, plain []byte, wrapType string) (wrapped, iv []byte, err error) {
	n, err := ivSize(wrapType)
	if err != nil {
		return nil, nil, err
	}
	if len(kek) != KEKSize {
		return nil, nil, fmt.Errorf("KEK is %d bytes, want %d", len(kek), KEKSize)
	}
	iv = make([]byte, n)
	if _, err := rand.Read(iv); err != nil {
		return nil, nil, fmt.Errorf("generate IV: %w", err)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, nil, err
	}
	switch wrapType {
	case A256GCM:
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, nil, err
		}
		return gcm.Seal(nil, iv, plain, nil), iv, nil
	default: // A256CTR
		out := make([]byte, len(plain))
		cipher.NewCTR(block, iv).XORKeyStream(out, plain)
		return out, iv, nil
	}
}

// open decrypts wrapped under kek. The caller has checked the KEK size.
func open(kek, wrapped, iv []byte, wrapType string) ([]byte, error) {
	n, err := ivSize(wrapType)
	if err != nil {
		return nil, err
	}
	if len(iv) != n {
		return nil, fmt.Errorf("%w: %s needs a %d-byte IV, the packet has %d bytes", ErrMalformedPacket, wrapType, n, len(iv))
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	switch wrapType {
	case A256GCM:
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		if len(wrapped) < gcm.Overhead() {
			return nil, fmt.Errorf("%w: A256GCM wrapped_data is %d bytes, shorter than the tag", ErrMalformedPacket, len(wrapped))
		}
		plain, err := gcm.Open(nil, iv, wrapped, nil)
		if err != nil {
			return nil, fmt.Errorf("%w: wrapped_data does not decrypt under the KEK (wrong KEK, or tampered data)", ErrAuthentication)
		}
		return plain, nil
	default: // A256CTR
		out := make([]byte, len(wrapped))
		cipher.NewCTR(block, iv).XORKeyStream(out, wrapped)
		return out, nil
	}
}
