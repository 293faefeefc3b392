package keyprovider_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/containers/ocicrypt/config"

	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/resource"
)

var errNotFound = errors.New("resource not found")

// mapKBC serves resources from a map keyed by canonical URI and remembers
// the slices it handed out, so tests can check they were zeroed.
type mapKBC struct {
	mu     sync.Mutex
	res    map[string][]byte
	served [][]byte
}

func newMapKBC(res map[string][]byte) *mapKBC { return &mapKBC{res: res} }

func (k *mapKBC) GetResource(_ context.Context, uri resource.URI) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.res[uri.String()]
	if !ok {
		return nil, fmt.Errorf("get %s: %w", uri, errNotFound)
	}
	out := append([]byte(nil), v...)
	k.served = append(k.served, out)
	return out, nil
}

func (k *mapKBC) allZeroed() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.served {
		for _, b := range s {
			if b != 0 {
				return false
			}
		}
	}
	return true
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.TrimSpace(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Independent vectors (see testdata/README.md).
const (
	vecKEK = "502082681f5d2393d5d6a390e2984c53514bed4a48dce311d85f9cd86475f01b"
	// openssl enc -aes-256-ctr -K vecKEK -iv 9aab4ef69f12b2cdc6d06a0ab7ad2766
	vecCTRPlain   = `{"symkey":"5Tq0n0Kg1XKuOBMx3R1a9fM2cF7yV8x0rT1sQ2bN4dE=","digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","cipheroptions":{"nonce":"AAECAwQFBgcICQoLDA0ODw=="}}`
	vecCTRWrapped = "sbArQ5PBqrXnWOMWZFB3ntnC9qB3biaRZ0K8A9u7PxEYZzdUmR2JUOsL1uYYztJNsSzvEInQvntW98XlgFy0iQcMcOZd56xqIi4K5UxuSPDw6I1bdpP+6WP90RrOJJFUjat9AF+vIGBfg0FwhyZG9IZ154+6TUPiSckfac8hEdngATrkZ47jfNLYfeA/TzRZmTX6tACMKwA7jtP9EYUqDlRXAwrj/Sgfdz5GSkoSCEoG1MiuhgqkopjV9Lf/NxwXEA=="
	vecCTRIV      = "mqtO9p8Sss3G0GoKt60nZg=="
	// Same KEK, IV ff..ff: the 128-bit counter wraps after the first block.
	vecCarryPlain   = `{"symkey":"carry","cipheroptions":{"nonce":"x"}}`
	vecCarryWrapped = "yjFRWAi1aZ74Ik3CKSg3rVKM4xXOB6qM17x9/BOvyTyYv9iLCtRb2D9B46Tk3L6X"
	vecCarryIV      = "/////////////////////w=="
	// Python cryptography AESGCM(vecKEK).encrypt(iv 0102..0c, plain, None).
	vecGCMPlain   = `{"symkey":"5Tq0n0Kg1XKuOBMx3R1a9fM2cF7yV8x0rT1sQ2bN4dE=","digest":"","cipheroptions":{"nonce":"AAECAwQFBgcICQoLDA0ODw=="}}`
	vecGCMWrapped = "wenRicX3nPUhc/hm08OMf5LLD2XIGaF1VQ8uzVBZtQy/LiGpkwyj0xWzogs0EgEQOeLK+4UGwJhOtTX7daXYe9N3ZlJcDMl9PWv8hLzRHbkF7Pz/rdOMD2qPjAHPIA9EBzeMzUcIyWOLKFYiw8FMAiFWiDTTAc0OWofjt6rt0P8nqFEuUS2m4PYO"
	vecGCMIV      = "AQIDBAUGBwgJCgsM"
	// Upstream's sample annotation decrypts to this.
	samplePlain = `{"symkey":"1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs=","digest":"sha256:18be1897f9402f27c8c0eba7c86e0c00f5656db62961b5949d55f9565c42c6e7","cipheroptions":{"nonce":"r10F9oaCu+nWFXfod3l83g=="}}`
)

func packetJSON(t *testing.T, m map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func v1(kid, wrapped, iv, wrapType string) map[string]any {
	return map[string]any{"kid": kid, "wrapped_data": wrapped, "iv": iv, "wrap_type": wrapType}
}

func with(m map[string]any, kv ...any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

func TestUnwrapVectors(t *testing.T) {
	kek := unhex(t, vecKEK)
	sampleKEK := unhex(t, string(fixture(t, "sample_kbc_kek.hex")))
	kbc := newMapKBC(map[string][]byte{
		"kbs:///default/key/1":                   sampleKEK,
		"kbs:///default/key/vec":                 kek,
		"kbs://kbs.example:8080/default/key/vec": kek,
	})
	u := &keyprovider.Unwrapper{KBC: kbc}
	for _, tc := range []struct {
		name   string
		packet []byte
		want   string
	}{
		{"upstream sample_kbc annotation (A256GCM)", fixture(t, "sample_kbc_annotation.json"), samplePlain},
		{"A256GCM (python cryptography)", packetJSON(t, v1("kbs:///default/key/vec", vecGCMWrapped, vecGCMIV, "A256GCM")), vecGCMPlain},
		{"A256CTR (openssl)", packetJSON(t, v1("kbs:///default/key/vec", vecCTRWrapped, vecCTRIV, "A256CTR")), vecCTRPlain},
		{"A256CTR counter carry (openssl)", packetJSON(t, v1("kbs:///default/key/vec", vecCarryWrapped, vecCarryIV, "A256CTR")), vecCarryPlain},
		{"v2 with provider kbs", packetJSON(t, with(v1("kbs:///default/key/vec", vecGCMWrapped, vecGCMIV, "A256GCM"),
			"version", "0.1.0", "provider", "kbs", "provider_settings", map[string]any{}, "annotations", map[string]any{})), vecGCMPlain},
		{"kid with a KBS host", packetJSON(t, v1("kbs://kbs.example:8080/default/key/vec", vecGCMWrapped, vecGCMIV, "A256GCM")), vecGCMPlain},
		{"kid as upstream writes it without keyid", packetJSON(t, v1("/default/key/vec", vecGCMWrapped, vecGCMIV, "A256GCM")), vecGCMPlain},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := u.Unwrap(context.Background(), tc.packet)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
			// Through the keywrap.KeyWrapper method too.
			got, err = u.UnwrapKey(&config.DecryptConfig{}, tc.packet)
			if err != nil || string(got) != tc.want {
				t.Errorf("UnwrapKey = %s, %v", got, err)
			}
		})
	}
	if !kbc.allZeroed() {
		t.Error("a KEK the KBC returned was not zeroed after use")
	}
}

func TestUnwrapErrors(t *testing.T) {
	kek := unhex(t, vecKEK)
	other := bytes.Repeat([]byte{7}, 32)
	kbc := newMapKBC(map[string][]byte{
		"kbs:///default/key/vec":   kek,
		"kbs:///default/key/wrong": other,
		"kbs:///default/key/short": kek[:16],
		"kbs:///default/key/long":  append(append([]byte(nil), kek...), 0),
	})
	gcm := v1("kbs:///default/key/vec", vecGCMWrapped, vecGCMIV, "A256GCM")
	ctr := v1("kbs:///default/key/vec", vecCTRWrapped, vecCTRIV, "A256CTR")
	tampered := b64(t, vecGCMWrapped)
	tampered[3] ^= 1
	for _, tc := range []struct {
		name   string
		packet []byte
		noKBC  bool
		is     error  // errors.Is target
		match  string // regexp on the message
	}{
		{name: "wrong KEK (GCM)", packet: packetJSON(t, with(gcm, "kid", "kbs:///default/key/wrong")),
			is: keyprovider.ErrAuthentication, match: `kid "kbs:///default/key/wrong".*A256GCM: authentication failed`},
		{name: "wrong KEK (CTR)", packet: packetJSON(t, with(ctr, "kid", "kbs:///default/key/wrong")),
			is: keyprovider.ErrAuthentication, match: `kid "kbs:///default/key/wrong".*A256CTR: authentication failed.*not the JSON private options`},
		{name: "tampered wrapped_data", packet: packetJSON(t, with(gcm, "wrapped_data", base64Std(tampered))),
			is: keyprovider.ErrAuthentication, match: `authentication failed`},
		{name: "GCM under the CTR IV size", packet: packetJSON(t, with(gcm, "iv", vecCTRIV)),
			is: keyprovider.ErrMalformedPacket, match: `A256GCM needs a 12-byte IV, the packet has 16 bytes`},
		{name: "CTR under the GCM IV size", packet: packetJSON(t, with(ctr, "iv", vecGCMIV)),
			is: keyprovider.ErrMalformedPacket, match: `A256CTR needs a 16-byte IV, the packet has 12 bytes`},
		{name: "wrapped_data shorter than the tag", packet: packetJSON(t, with(gcm, "wrapped_data", "AAEC")),
			is: keyprovider.ErrMalformedPacket, match: `shorter than the tag`},
		{name: "missing KEK", packet: packetJSON(t, with(gcm, "kid", "kbs:///default/key/absent")),
			is: errNotFound, match: `kid "kbs:///default/key/absent".*fetch KEK: get kbs:///default/key/absent: resource not found`},
		{name: "short KEK", packet: packetJSON(t, with(gcm, "kid", "kbs:///default/key/short")),
			match: `KEK kbs:///default/key/short is 16 bytes, want 32`},
		{name: "long KEK", packet: packetJSON(t, with(gcm, "kid", "kbs:///default/key/long")),
			match: `KEK kbs:///default/key/long is 33 bytes, want 32`},
		{name: "unknown provider", packet: packetJSON(t, with(gcm, "version", "0.1.0", "provider", "aliyun")),
			is: keyprovider.ErrUnsupported, match: `KEK provider "aliyun" \(only "kbs" is supported\)`},
		{name: "unknown version", packet: packetJSON(t, with(gcm, "version", "0.2.0")),
			is: keyprovider.ErrUnsupported, match: `packet version "0.2.0"`},
		{name: "unknown wrap type", packet: packetJSON(t, with(gcm, "wrap_type", "A128GCM")),
			is: keyprovider.ErrUnsupported, match: `wrap type "A128GCM"`},
		{name: "no wrap_type", packet: packetJSON(t, with(gcm, "wrap_type", nil)),
			is: keyprovider.ErrMalformedPacket, match: `no wrap_type`},
		{name: "no iv", packet: packetJSON(t, with(gcm, "iv", nil)),
			is: keyprovider.ErrMalformedPacket, match: `no iv`},
		{name: "kid not a resource URI (upstream CDH v1.json)", packet: fixture(t, "cdh-v1.json"),
			is: keyprovider.ErrMalformedPacket, match: `kid "kbs:///kbs:///default/key/1".*kid: resource URI`},
		{name: "kid with 2 segments", packet: packetJSON(t, with(gcm, "kid", "kbs:///default/key")),
			is: keyprovider.ErrMalformedPacket, match: `exactly 3 path segments`},
		{name: "garbage", packet: []byte("\xff\xfe{garbage"), is: keyprovider.ErrMalformedPacket, match: `unwrap layer key: malformed annotation packet`},
		{name: "no KBC", packet: packetJSON(t, gcm), noKBC: true, is: keyprovider.ErrNoKBC, match: `kid "kbs:///default/key/vec".*no KBC configured`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &keyprovider.Unwrapper{KBC: kbc}
			if tc.noKBC {
				u = &keyprovider.Unwrapper{}
			}
			got, err := u.Unwrap(context.Background(), tc.packet)
			if err == nil {
				t.Fatalf("unwrapped %q", got)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v is not %v", err, tc.is)
			}
			if !regexp.MustCompile(tc.match).MatchString(err.Error()) {
				t.Errorf("error %q does not match %q", err, tc.match)
			}
		})
	}
	if !kbc.allZeroed() {
		t.Error("a KEK the KBC returned was not zeroed after use")
	}
}

func TestUnwrapperKeyWrapper(t *testing.T) {
	u := &keyprovider.Unwrapper{KBC: newMapKBC(nil)}
	if u.GetAnnotationID() != "org.opencontainers.image.enc.keys.provider.attestation-agent" {
		t.Errorf("annotation id %q", u.GetAnnotationID())
	}
	if u.NoPossibleKeys(nil) || !(&keyprovider.Unwrapper{}).NoPossibleKeys(nil) {
		t.Error("NoPossibleKeys must be false with a KBC and true without")
	}
	if u.GetPrivateKeys(map[string][][]byte{"privkeys": {{1}}}) != nil {
		t.Error("GetPrivateKeys exported something")
	}
	// Not asked to wrap: nothing, no error (ocicrypt calls every wrapper).
	if b, err := u.WrapKeys(&config.EncryptConfig{Parameters: map[string][][]byte{"pubkeys": {{1}}}}, []byte("{}")); b != nil || err != nil {
		t.Errorf("WrapKeys for another scheme = %q, %v", b, err)
	}
	if _, err := u.WrapKeys(&config.EncryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("keyid=kbs:///a/b/c")}}}, []byte("{}")); err == nil {
		t.Error("the Unwrapper wrapped")
	}
	ann := base64Std(fixture(t, "sample_kbc_annotation.json")) + "," + base64Std(packetJSON(t, v1("kbs:///a/b/c", "", "", "A256GCM")))
	kids, err := u.GetRecipients(ann)
	if err != nil || strings.Join(kids, " ") != "kbs:///default/key/1 kbs:///a/b/c" {
		t.Errorf("GetRecipients = %v, %v", kids, err)
	}
	if _, err := u.GetRecipients("!!"); err == nil {
		t.Error("GetRecipients accepted garbage")
	}
}
