package keyprovider_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"regexp"
	"testing"

	"github.com/guestd/guestd/kbc/keyprovider"
)

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func b64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		file string
		want keyprovider.AnnotationPacket
		err  string // regexp; "" = success
	}{
		{name: "upstream ocicrypt-rs sample (v1)", file: "sample_kbc_annotation.json", want: keyprovider.AnnotationPacket{
			KID:         "kbs:///default/key/1",
			WrappedData: b64(t, "KxAFgXwa0y72Xdygub9lF00RVMtSRbYzvakIEASgi3Gvt1wGLkhKPXf0S033Jdi6vAN6zBM7d0xZSDo2JCeew0FeKwTYgdJfdcPhuEpZOpjhwIsidyeiunzp0J/crvI1tSPZJw4DPHZN2eQtg71rDzIbuDM5ATheiDM9/YJv+k+n6Nv6/pRb8qynNzbWFz7Q8wEo1ZZlL6UftOBJ6j9GuEOTM2k/B+5sMA2VhGHSzDsKA1mn0qzcn2HJg4GcmxwDpJwzm5n7B4iIJ3A0umrQAjQ="),
			IV:          b64(t, "3PQMqtjbR4hxCr83"),
			WrapType:    "A256GCM",
		}},
		{name: "upstream CDH v1.json", file: "cdh-v1.json", want: keyprovider.AnnotationPacket{
			KID:         "kbs:///kbs:///default/key/1",
			WrappedData: b64(t, "HRCsBgH/ueLcWlUqP8j8BTREOjQXSNQvjPejbSTQt8Nu4pve07TmkSqRzu2yR7l9WbbZ4O5PChsnjuNLzu6cHvOqVSSCu3aIDYVs8VUPJSO434G+K5sAvsCSJK454VMQEY9zW8y45BrYUYV5jEKSsKvR1iqFkpzcdwI8tjGTpRMlu1gGQ6mA1jgVZKgnK8hcihmgCu24oKPmdd0pMKfiFDbzmsnRw4CS+eRb1Dp3vgLD6hCMz5BV7abaq7VMWP7SKJtJJbpYzqlKiI5i0r1qO8U="),
			IV:          b64(t, "M02S5rumY5JybMLQ"),
			WrapType:    "A256GCM",
		}},
		{name: "v2 full",
			in: `{"version":"0.1.0","kid":"kbs:///default/key/1","wrapped_data":"AAEC","provider":"kbs","iv":"AAECAwQFBgcICQoL","wrap_type":"A256GCM","provider_settings":{},"annotations":{"x":1}}`,
			want: keyprovider.AnnotationPacket{Version: "0.1.0", KID: "kbs:///default/key/1", WrappedData: []byte{0, 1, 2},
				Provider: "kbs", IV: []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, WrapType: "A256GCM",
				ProviderSettings: []byte(`{}`), Annotations: []byte(`{"x":1}`)}},
		{name: "v2 KMS provider, no iv or wrap_type",
			in:   `{"version":"0.1.0","kid":"key-id","wrapped_data":"AAEC","provider":"aliyun","provider_settings":{"region":"x"},"annotations":{}}`,
			want: keyprovider.AnnotationPacket{Version: "0.1.0", KID: "key-id", WrappedData: []byte{0, 1, 2}, Provider: "aliyun", ProviderSettings: []byte(`{"region":"x"}`), Annotations: []byte(`{}`)}},
		{name: "whitespace and unknown members",
			in:   " {\n \"kid\" : \"kbs:///a/b/c\" , \"extra\": [1,{\"kid\":2}], \"wrapped_data\": \"\" }\n",
			want: keyprovider.AnnotationPacket{KID: "kbs:///a/b/c", WrappedData: []byte{}}},
		{name: "garbage", in: "\x00\x01garbage", err: `malformed annotation packet: not JSON`},
		{name: "empty", in: "", err: `malformed annotation packet: not JSON`},
		{name: "array", in: `[{"kid":"x"}]`, err: `not a JSON object`},
		{name: "trailing data", in: `{"kid":"x","wrapped_data":""} {}`, err: `trailing data`},
		{name: "truncated", in: `{"kid":"x","wrapped_data":""`, err: `not JSON`},
		{name: "missing kid", in: `{"wrapped_data":""}`, err: `missing "kid"`},
		{name: "missing wrapped_data", in: `{"kid":"x"}`, err: `missing "wrapped_data"`},
		{name: "kid is a number", in: `{"kid":1,"wrapped_data":""}`, err: `"kid" is not a string`},
		{name: "kid is null", in: `{"kid":null,"wrapped_data":""}`, err: `"kid" is not a string`},
		{name: "case matters", in: `{"KID":"x","wrapped_data":""}`, err: `missing "kid"`},
		{name: "duplicate kid", in: `{"kid":"a","kid":"b","wrapped_data":""}`, err: `duplicate member "kid"`},
		{name: "wrapped_data not base64", in: `{"kid":"x","wrapped_data":"***"}`, err: `"wrapped_data" is not standard base64`},
		{name: "iv url-safe base64", in: `{"kid":"x","wrapped_data":"","iv":"-_-_"}`, err: `"iv" is not standard base64`},
		{name: "iv unpadded", in: `{"kid":"x","wrapped_data":"","iv":"AAE"}`, err: `"iv" is not standard base64`},
		{name: "version not a string", in: `{"version":1,"kid":"x","wrapped_data":""}`, err: `"version" is not a string`},
		{name: "provider_settings not an object", in: `{"kid":"x","wrapped_data":"","provider_settings":[]}`, err: `"provider_settings" is not an object`},
		{name: "annotations null", in: `{"kid":"x","wrapped_data":"","annotations":null}`, err: `"annotations" is not an object`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			if tc.file != "" {
				in = fixture(t, tc.file)
			}
			got, err := keyprovider.ParsePacket(in)
			if tc.err != "" {
				if err == nil || !errors.Is(err, keyprovider.ErrMalformedPacket) || !regexp.MustCompile(tc.err).MatchString(err.Error()) {
					t.Fatalf("err %v, want ErrMalformedPacket matching %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Version != tc.want.Version || got.KID != tc.want.KID || got.Provider != tc.want.Provider || got.WrapType != tc.want.WrapType ||
				!bytes.Equal(got.WrappedData, tc.want.WrappedData) || !bytes.Equal(got.IV, tc.want.IV) ||
				!bytes.Equal(got.ProviderSettings, tc.want.ProviderSettings) || !bytes.Equal(got.Annotations, tc.want.Annotations) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestMarshalV1(t *testing.T) {
	p := keyprovider.AnnotationPacket{KID: "kbs:///default/key/1", WrappedData: []byte{0xfb, 0xff}, IV: []byte{1, 2, 3}, WrapType: "A256GCM"}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// coco_keyprovider's exact shape: four members in this order, std base64.
	const want = `{"kid":"kbs:///default/key/1","wrapped_data":"+/8=","iv":"AQID","wrap_type":"A256GCM"}`
	if string(b) != want {
		t.Errorf("got  %s\nwant %s", b, want)
	}
	back, err := keyprovider.ParsePacket(b)
	if err != nil || back.KID != p.KID || !bytes.Equal(back.WrappedData, p.WrappedData) {
		t.Errorf("round trip %+v, %v", back, err)
	}
}
