package keyprovider_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/containers/ocicrypt/config"

	"github.com/guestd/guestd/kbc/keyprovider"
)

func base64Std(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func TestParseParams(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want keyprovider.Params
		err  string
	}{
		{in: "", want: keyprovider.Params{}},
		{in: "Enabled", want: keyprovider.Params{}},
		{in: "keyid=kbs:///default/key/1::keypath=/tmp/k::algorithm=A256CTR",
			want: keyprovider.Params{KeyID: "kbs:///default/key/1", KeyPath: "/tmp/k", Algorithm: "A256CTR"}},
		{in: "algorithm=A256GCM::keyid=kbs:///a/b/c::", want: keyprovider.Params{KeyID: "kbs:///a/b/c", Algorithm: "A256GCM"}},
		{in: "keyid=kbs:///a/b/c?x=y=z", want: keyprovider.Params{KeyID: "kbs:///a/b/c?x=y=z"}},
		{in: "sample=true", want: keyprovider.Params{Sample: true}},
		{in: "sample=false::keyid=kbs:///a/b/c", want: keyprovider.Params{KeyID: "kbs:///a/b/c"}},
		{in: "sample=yes", err: `sample="yes" is not a boolean`},
		{in: "algorithm=A128GCM", err: `wrap type "A128GCM"`},
		{in: "key_id=kbs:///a/b/c", err: `unknown parameter "key_id"`},
		{in: "keyid", err: `parameter "keyid" is not key=value`},
		{in: "keyid=a::keyid=b", err: `parameter "keyid" given twice`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := keyprovider.ParseParams(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
			}
			back, err := keyprovider.ParseParams(got.String())
			if err != nil || back != got {
				t.Errorf("String() %q parses to %+v, %v", got.String(), back, err)
			}
		})
	}
}

func TestWrapperRoundTrip(t *testing.T) {
	kek := bytes.Repeat([]byte{0x42}, 32)
	opts := []byte(`{"symkey":"c2VjcmV0","cipheroptions":{"nonce":"bm9uY2U="}}`)
	for _, tc := range []struct {
		alg, kid, wantKID string
		ivLen             int
	}{
		{"", "kbs:///default/key/1", "kbs:///default/key/1", 12},
		{"A256GCM", "/default/key/2", "kbs:///default/key/2", 12},
		{"A256CTR", "kbs://kbs.example/default/key/3", "kbs://kbs.example/default/key/3", 16},
	} {
		t.Run(tc.alg+tc.kid, func(t *testing.T) {
			w := &keyprovider.Wrapper{KEK: kek, KID: tc.kid, Algorithm: tc.alg}
			b1, err := w.Wrap(opts)
			if err != nil {
				t.Fatal(err)
			}
			b2, err := w.Wrap(opts)
			if err != nil {
				t.Fatal(err)
			}
			p1, err := keyprovider.ParsePacket(b1)
			if err != nil {
				t.Fatal(err)
			}
			p2, _ := keyprovider.ParsePacket(b2)
			wantAlg := tc.alg
			if wantAlg == "" {
				wantAlg = "A256GCM"
			}
			if p1.KID != tc.wantKID || p1.WrapType != wantAlg || len(p1.IV) != tc.ivLen || p1.Version != "" || p1.Provider != "" {
				t.Errorf("packet %s", b1)
			}
			if bytes.Equal(p1.IV, p2.IV) || bytes.Equal(p1.WrappedData, p2.WrappedData) {
				t.Error("two wraps share an IV")
			}
			if bytes.Contains(b1, opts) || bytes.Contains(b1, kek) {
				t.Error("packet holds the plaintext or the KEK")
			}
			u := &keyprovider.Unwrapper{KBC: newMapKBC(map[string][]byte{tc.wantKID: kek})}
			got, err := u.Unwrap(context.Background(), b1)
			if err != nil || !bytes.Equal(got, opts) {
				t.Errorf("unwrap = %q, %v", got, err)
			}
		})
	}
	for _, w := range []*keyprovider.Wrapper{
		{KEK: kek[:31], KID: "kbs:///a/b/c"},
		{KEK: kek, KID: ""},
		{KEK: kek, KID: "http://x/a/b/c"},
		{KEK: kek, KID: "kbs:///a/b/c", Algorithm: "A128CTR"},
	} {
		if _, err := w.Wrap(opts); err == nil {
			t.Errorf("Wrap with %+v succeeded", *w)
		}
	}
}

func TestWrapperKeyWrapper(t *testing.T) {
	kek := bytes.Repeat([]byte{0x17}, 32)
	opts := []byte(`{"symkey":"a2V5"}`)
	registered := &keyprovider.Wrapper{} // as registered with ocicrypt: no state
	ec := &config.EncryptConfig{Parameters: keyprovider.EncryptParameters(kek, "kbs:///default/key/ec", "A256CTR")}

	ann, err := registered.WrapKeys(ec, opts)
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyprovider.ParsePacket(ann)
	if err != nil || p.KID != "kbs:///default/key/ec" || p.WrapType != "A256CTR" {
		t.Fatalf("packet %s, %v", ann, err)
	}
	// The tenant can unwrap with the KEK in a DecryptConfig.
	dc := &config.DecryptConfig{Parameters: map[string][][]byte{keyprovider.ParamKEK: {kek}}}
	if registered.NoPossibleKeys(dc.Parameters) || !registered.NoPossibleKeys(nil) {
		t.Error("NoPossibleKeys")
	}
	got, err := registered.UnwrapKey(dc, ann)
	if err != nil || !bytes.Equal(got, opts) {
		t.Errorf("UnwrapKey = %q, %v", got, err)
	}
	if !bytes.Equal(kek, bytes.Repeat([]byte{0x17}, 32)) {
		t.Error("UnwrapKey zeroed the caller's KEK")
	}
	if _, err := registered.UnwrapKey(&config.DecryptConfig{}, ann); err == nil {
		t.Error("UnwrapKey without a KEK succeeded")
	}
	// Zeroing the KEK after use zeroes it in the parameters as documented.
	params := keyprovider.EncryptParameters(kek, "kbs:///a/b/c", "")
	clear(kek)
	if !bytes.Equal(params[keyprovider.ParamKEK][0], make([]byte, 32)) {
		t.Error("EncryptParameters copied the KEK")
	}

	// Fields as fallback.
	fixed := &keyprovider.Wrapper{KEK: bytes.Repeat([]byte{1}, 32), KID: "kbs:///default/key/fixed"}
	ann, err = fixed.WrapKeys(&config.EncryptConfig{Parameters: map[string][][]byte{"attestation-agent": {[]byte("Enabled")}}}, opts)
	if p, _ := keyprovider.ParsePacket(ann); err != nil || p.KID != "kbs:///default/key/fixed" || p.WrapType != "A256GCM" {
		t.Errorf("fallback packet %s, %v", ann, err)
	}

	for _, tc := range []struct {
		name   string
		params map[string][][]byte
		err    string
	}{
		{"not asked", map[string][][]byte{"pubkeys": {{1}}}, ""},
		{"two parameters", map[string][][]byte{"attestation-agent": {[]byte("keyid=kbs:///a/b/c"), []byte("keyid=kbs:///a/b/d")}, keyprovider.ParamKEK: {make([]byte, 32)}}, "2 attestation-agent parameters"},
		{"keypath", map[string][][]byte{"attestation-agent": {[]byte("keypath=/k::keyid=kbs:///a/b/c")}}, "keypath are not supported in-process"},
		{"no KEK", map[string][][]byte{"attestation-agent": {[]byte("keyid=kbs:///a/b/c")}}, "no KEK"},
		{"no kid", map[string][][]byte{"attestation-agent": {[]byte("")}, keyprovider.ParamKEK: {make([]byte, 32)}}, "no kid"},
		{"bad param", map[string][][]byte{"attestation-agent": {[]byte("colour=red")}}, "unknown parameter"},
		{"short KEK", map[string][][]byte{"attestation-agent": {[]byte("keyid=kbs:///a/b/c")}, keyprovider.ParamKEK: {make([]byte, 16)}}, "KEK is 16 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ann, err := registered.WrapKeys(&config.EncryptConfig{Parameters: tc.params}, opts)
			if tc.err == "" {
				if ann != nil || err != nil {
					t.Errorf("got %q, %v; want nothing", ann, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err %v, want %q", err, tc.err)
			}
		})
	}
}
