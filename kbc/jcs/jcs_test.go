package jcs

import (
	"crypto/sha512"
	"encoding/hex"
	"testing"
)

func TestCanonicalize(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"sorted and compact", `{ "b": 1, "a": "test", "c": {"d": "e"} }`, `{"a":"test","b":1,"c":{"d":"e"}}`},
		{"array order kept", `[3, 1, {"z":null,"y":true}]`, `[3,1,{"y":true,"z":null}]`},
		// RFC 8785 §3.2.2.2 string example.
		{"string escapes", `"\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/"`, `"€$\u000f\nA'B\"\\\\\"/"`},
		// RFC 8785 §3.2.3 sorting example: UTF-16 code unit order.
		{"utf16 key order", `{"\u20ac":1,"\r":2,"\ufb33":3,"1":4,"\ud83d\ude00":5,"\u0080":6,"\u00f6":7}`,
			"{\"\\r\":2,\"1\":4,\"\u0080\":6,\"\u00f6\":7,\"\u20ac\":1,\"\U0001F600\":5,\"\ufb33\":3}"},
		// RFC 8785 §3.2.2.3 / appendix B number examples.
		{"numbers", `[333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001, -0, 1e21, 1e20, 1e-7, 0.000001, 9007199254740992, 5e-324, 1.7976931348623157e308, -1.5]`,
			`[333333333.3333333,1e+30,4.5,0.002,1e-27,0,1e+21,100000000000000000000,1e-7,0.000001,9007199254740992,5e-324,1.7976931348623157e+308,-1.5]`},
		{"literals", `[true,false,null]`, `[true,false,null]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonicalize([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestCanonicalizeRejects(t *testing.T) {
	for _, in := range []string{
		`{"a":1,"a":2}`, // duplicate key
		`{"a":1} {}`,    // trailing value
		`{"a":`,         // truncated
		"\"\xff\"",      // invalid UTF-8
		`1e400`,         // not finite
		``,
	} {
		if got, err := Canonicalize([]byte(in)); err == nil {
			t.Errorf("Canonicalize(%q) = %s, want error", in, got)
		}
	}
}

// TestTrusteeVector is trustee's attestation-service binding vector:
// sha384(JCS({"b":1,"a":"test","c":{"d":"e"}})).
func TestTrusteeVector(t *testing.T) {
	c, err := Marshal(map[string]any{"b": 1, "a": "test", "c": map[string]string{"d": "e"}})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha512.Sum384(c)
	const want = "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("sha384 = %s, want %s", got, want)
	}
}

func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(`{"b":[1,2.5,"x"],"a":{"c":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out, err := Canonicalize(data)
		if err != nil {
			return
		}
		again, err := Canonicalize(out)
		if err != nil {
			t.Fatalf("canonical output %q does not re-parse: %v", out, err)
		}
		if string(again) != string(out) {
			t.Fatalf("not idempotent: %q -> %q", out, again)
		}
	})
}
