package protocol

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
)

func TestRequestGolden(t *testing.T) {
	extra, err := json.Marshal(RequestExtraParams{SupportedHashAlgorithms: SupportedHashAlgorithms})
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(Request{Version: Version, Tee: "tdx", ExtraParams: extra})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"version":"0.4.0","tee":"tdx","extra-params":{"supported-hash-algorithms":["sha256","sha384","sha512"]}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestChallengeHashAlgorithm(t *testing.T) {
	for _, tc := range []struct {
		body    string
		want    HashAlgorithm
		wantErr bool
	}{
		{`{"nonce":"AAEC","extra-params":""}`, SHA384, false},
		{`{"nonce":"AAEC"}`, SHA384, false},
		{`{"nonce":"AAEC","extra-params":null}`, SHA384, false},
		{`{"nonce":"AAEC","extra-params":{}}`, SHA384, false},
		{`{"nonce":"AAEC","extra-params":{"selected-hash-algorithm":"sha512"}}`, SHA512, false},
		{`{"nonce":"AAEC","extra-params":{"selected-hash-algorithm":"sha256"}}`, SHA256, false},
		{`{"nonce":"AAEC","extra-params":"{\"selected-hash-algorithm\":\"sha256\"}"}`, SHA256, false},
		{`{"nonce":"AAEC","extra-params":{"selected-hash-algorithm":"sm3"}}`, "", true},
		{`{"nonce":"AAEC","extra-params":{"selected-hash-algorithm":7}}`, "", true},
		{`{"nonce":"AAEC","extra-params":"garbage"}`, "", true},
		{`{"nonce":"AAEC","extra-params":[1]}`, "", true},
	} {
		var c Challenge
		if err := json.Unmarshal([]byte(tc.body), &c); err != nil {
			t.Fatalf("%s: %v", tc.body, err)
		}
		got, err := c.HashAlgorithm()
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("%s: got %q, %v; want %q, err %v", tc.body, got, err, tc.want, tc.wantErr)
		}
	}
}

// TestAttestationGolden checks both the serialisation of an Attestation and
// the binding rule against the worked example: the sample evidence's
// report_data is the SHA-384 of the JCS runtime data.
func TestAttestationGolden(t *testing.T) {
	golden, err := os.ReadFile("testdata/attestation-sample.json")
	if err != nil {
		t.Fatal(err)
	}
	golden = bytes.TrimSpace(golden)
	var att Attestation
	if err := json.Unmarshal(golden, &att); err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(att)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, golden) {
		t.Fatalf("re-serialised attestation differs:\ngot  %s\nwant %s", again, golden)
	}

	rd, err := ReportData(SHA384, att.RuntimeData.Nonce, att.RuntimeData.TeePubKey, att.TeeEvidence.Additional)
	if err != nil {
		t.Fatal(err)
	}
	var ev struct {
		ReportData string `json:"report_data"`
	}
	if err := json.Unmarshal(att.TeeEvidence.Primary, &ev); err != nil {
		t.Fatal(err)
	}
	if got := base64.StdEncoding.EncodeToString(rd); got != ev.ReportData {
		t.Fatalf("binding digest %s, example has %s", got, ev.ReportData)
	}
	// The additional-evidence member is part of the hash even when empty.
	other, err := ReportData(SHA384, att.RuntimeData.Nonce, att.RuntimeData.TeePubKey, "{}")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other, rd) {
		t.Fatal("additional evidence does not change the binding digest")
	}
	for _, h := range SupportedHashAlgorithms {
		d, err := ReportData(h, att.RuntimeData.Nonce, att.RuntimeData.TeePubKey, "")
		if err != nil {
			t.Fatal(err)
		}
		want := map[HashAlgorithm]int{SHA256: 32, SHA384: 48, SHA512: 64}[h]
		if len(d) != want {
			t.Errorf("%s digest is %d bytes, want %d", h, len(d), want)
		}
	}
}

func TestErrorInformationVariant(t *testing.T) {
	e := ErrorInformation{Type: ErrorTypePrefix + "PolicyDeny", Detail: "x"}
	if e.Variant() != "PolicyDeny" {
		t.Fatalf("Variant() = %q", e.Variant())
	}
}
