package sealed_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/guestd/guestd/kbc/sealed"
)

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// RFC 3394 §4.6: 256 bits of key data wrapped with a 256-bit KEK.
const (
	rfcKEK     = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	rfcKeyData = "00112233445566778899aabbccddeeff000102030405060708090a0b0c0d0e0f"
	rfcWrapped = "28c9f404c4b810f4cbccb35cfb87f8263f5786e2d80ed326cbc7f0e71a99f43bfb988b9b7a02dd21"
	kekURI     = "kbs:///default/kek/1"
)

// handEnvelope builds a kbs envelope with the standard library only: the
// RFC 3394 vector's key data is the data key, wrapped under its KEK.
func handEnvelope(t testing.TB, wrapType string, iv, plaintext []byte) *sealed.Envelope {
	t.Helper()
	block, err := aes.NewCipher(mustHex(t, rfcKeyData))
	if err != nil {
		t.Fatal(err)
	}
	var data []byte
	switch wrapType {
	case sealed.A256GCM:
		gcm, _ := cipher.NewGCM(block)
		data = gcm.Seal(nil, iv, plaintext, nil)
	case sealed.A256CTR:
		data = make([]byte, len(plaintext))
		cipher.NewCTR(block, iv).XORKeyStream(data, plaintext)
	}
	std := base64.StdEncoding
	return &sealed.Envelope{
		Provider:      "kbs",
		KeyID:         kekURI,
		EncryptedKey:  std.EncodeToString(mustHex(t, rfcWrapped)),
		EncryptedData: std.EncodeToString(data),
		WrapType:      wrapType,
		IV:            std.EncodeToString(iv),
	}
}

func unsealEnvelope(t testing.TB, e *sealed.Envelope, kbc *mapKBC) ([]byte, error) {
	t.Helper()
	dir, key := keyDir(t)
	s := seal(t, &sealed.Secret{Version: "0.1.0", Envelope: e}, key, "test-key")
	return (&sealed.Unsealer{KBC: kbc, KeyDir: dir}).Unseal(context.Background(), []byte(s))
}

func TestEnvelopeKBS(t *testing.T) {
	plaintext := []byte("the secret value\x00\xff")
	gcmIV := mustHex(t, "cafebabefacedbaddecaf888")
	ctrIV := mustHex(t, "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
	for _, tc := range []struct {
		name string
		env  func(t *testing.T) *sealed.Envelope
	}{
		{"hand-built A256GCM", func(t *testing.T) *sealed.Envelope { return handEnvelope(t, sealed.A256GCM, gcmIV, plaintext) }},
		{"hand-built A256CTR", func(t *testing.T) *sealed.Envelope { return handEnvelope(t, sealed.A256CTR, ctrIV, plaintext) }},
		{"NewKBSEnvelope", func(t *testing.T) *sealed.Envelope {
			e, err := sealed.NewKBSEnvelope(kekURI, mustHex(t, rfcKEK), plaintext)
			if err != nil {
				t.Fatal(err)
			}
			return e
		}},
		{"provider case", func(t *testing.T) *sealed.Envelope {
			e := handEnvelope(t, sealed.A256GCM, gcmIV, plaintext)
			e.Provider = "KBS"
			return e
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kbc := newKBC(map[string][]byte{kekURI: mustHex(t, rfcKEK)})
			got, err := unsealEnvelope(t, tc.env(t), kbc)
			if err != nil || !bytes.Equal(got, plaintext) {
				t.Fatalf("Unseal: %q, %v", got, err)
			}
			for _, s := range kbc.served {
				if !bytes.Equal(s, make([]byte, len(s))) {
					t.Error("the KEK was not cleared after use")
				}
			}
		})
	}
}

func TestNewKBSEnvelope(t *testing.T) {
	e, err := sealed.NewKBSEnvelope(kekURI, mustHex(t, rfcKEK), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Provider != "kbs" || e.KeyID != kekURI || e.WrapType != "A256GCM" {
		t.Errorf("envelope %+v", e)
	}
	wrapped, _ := base64.StdEncoding.DecodeString(e.EncryptedKey)
	iv, _ := base64.StdEncoding.DecodeString(e.IV)
	data, _ := base64.StdEncoding.DecodeString(e.EncryptedData)
	if len(wrapped) != 40 || len(iv) != 12 || len(data) != 1+16 {
		t.Errorf("sizes: wrapped key %d, iv %d, data %d", len(wrapped), len(iv), len(data))
	}
	e2, _ := sealed.NewKBSEnvelope(kekURI, mustHex(t, rfcKEK), []byte("x"))
	if e2.EncryptedKey == e.EncryptedKey || e2.IV == e.IV {
		t.Error("two envelopes share a data key or iv")
	}
	if _, err := sealed.NewKBSEnvelope(kekURI, make([]byte, 16), []byte("x")); err == nil {
		t.Error("a 16-byte KEK was accepted")
	}
}

func TestEnvelopeErrors(t *testing.T) {
	gcmIV := mustHex(t, "cafebabefacedbaddecaf888")
	base := func(t *testing.T) *sealed.Envelope { return handEnvelope(t, sealed.A256GCM, gcmIV, []byte("v")) }
	for _, tc := range []struct {
		name  string
		mod   func(e *sealed.Envelope)
		kek   []byte
		fail  error
		class error
		want  string
	}{
		{"wrong KEK", nil, bytes.Repeat([]byte{1}, 32), nil, sealed.ErrVerification, "does not unwrap under " + kekURI},
		{"short KEK", nil, make([]byte, 16), nil, sealed.ErrUnsupported, "is 16 bytes"},
		{"KBC failure", nil, nil, errors.New("KBS unreachable"), nil, "fetch envelope key " + kekURI},
		{"KEK not found", nil, nil, nil, errNotFound, "fetch envelope key " + kekURI},
		{"tampered data", func(e *sealed.Envelope) {
			b, _ := base64.StdEncoding.DecodeString(e.EncryptedData)
			b[0] ^= 1
			e.EncryptedData = base64.StdEncoding.EncodeToString(b)
		}, nil, nil, sealed.ErrVerification, "does not decrypt"},
		{"wrong iv", func(e *sealed.Envelope) { e.IV = base64.StdEncoding.EncodeToString(make([]byte, 12)) }, nil, nil, sealed.ErrVerification, "does not decrypt"},
		{"iv size", func(e *sealed.Envelope) { e.IV = base64.StdEncoding.EncodeToString(make([]byte, 16)) }, nil, nil, sealed.ErrMalformed, "12-byte iv"},
		{"wrap type", func(e *sealed.Envelope) { e.WrapType = "A128GCM" }, nil, nil, sealed.ErrUnsupported, `wrap_type "A128GCM"`},
		{"key base64", func(e *sealed.Envelope) { e.EncryptedKey = "yyy" }, nil, nil, sealed.ErrMalformed, "encrypted_key is not standard base64"},
		{"key base64url", func(e *sealed.Envelope) { e.EncryptedKey = strings.TrimRight(e.EncryptedKey, "=") }, nil, nil, sealed.ErrMalformed, "encrypted_key"},
		{"data base64", func(e *sealed.Envelope) { e.EncryptedData = "zzz" }, nil, nil, sealed.ErrMalformed, "encrypted_data is not standard base64"},
		{"iv base64", func(e *sealed.Envelope) { e.IV = "www" }, nil, nil, sealed.ErrMalformed, "iv is not standard base64"},
		{"wrapped key short", func(e *sealed.Envelope) { e.EncryptedKey = base64.StdEncoding.EncodeToString(make([]byte, 8)) }, nil, nil, sealed.ErrVerification, "does not unwrap"},
		{"key_id not a URI", func(e *sealed.Envelope) { e.KeyID = "my-kms-key" }, nil, nil, sealed.ErrMalformed, "envelope key"},
		{"aliyun", func(e *sealed.Envelope) { e.Provider = "aliyun" }, nil, nil, sealed.ErrUnsupported, `envelope provider "aliyun"`},
		{"ehsm", func(e *sealed.Envelope) { e.Provider = "ehsm" }, nil, nil, sealed.ErrUnsupported, `envelope provider "ehsm"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := base(t)
			if tc.mod != nil {
				tc.mod(e)
			}
			kek := tc.kek
			if kek == nil {
				kek = mustHex(t, rfcKEK)
			}
			kbc := newKBC(map[string][]byte{kekURI: kek})
			if tc.name == "KEK not found" {
				kbc = newKBC(nil)
			}
			kbc.fail = tc.fail
			_, err := unsealEnvelope(t, e, kbc)
			class := tc.class
			if tc.fail != nil {
				class = tc.fail
			}
			if !errors.Is(err, class) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Unseal: %v, want %v with %q", err, class, tc.want)
			}
		})
	}
}
