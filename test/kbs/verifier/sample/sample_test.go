package sample_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	sampleattester "github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/verifier/sample"
)

var _ kbs.Verifier = sample.Verifier{}

func TestVerify(t *testing.T) {
	rd := bytes.Repeat([]byte{0xc3, 0xba}, 24) // 48 bytes, a SHA-384 digest
	std := base64.StdEncoding.EncodeToString(rd)
	tests := []struct {
		name     string
		evidence string
		want     []byte // expected report data
		err      string // "" = verifies
	}{
		{"exact", `{"svn":"1","report_data":"` + std + `"}`, rd, ""},
		{"unknown members ignored", `{"svn":"2","report_data":"` + std + `","x":[1]}`, rd, ""},
		{"empty report data, absent", `{"svn":"1"}`, nil, ""},
		{"absent report data", `{"svn":"1"}`, rd, "does not match"},
		{"other digest", `{"svn":"1","report_data":"` + std + `"}`, append([]byte{1}, rd[1:]...), "does not match the expected binding digest"},
		{"zero-padded", `{"svn":"1","report_data":"` + base64.StdEncoding.EncodeToString(append(rd, make([]byte, 16)...)) + `"}`, rd, "does not match"},
		{"truncated", `{"svn":"1","report_data":"` + base64.StdEncoding.EncodeToString(rd[:32]) + `"}`, rd, "does not match"},
		{"base64url", `{"svn":"1","report_data":"` + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff}) + `"}`, []byte{0xfb, 0xff}, "not standard base64"},
		{"unpadded", `{"svn":"1","report_data":"` + base64.RawStdEncoding.EncodeToString(rd[:47]) + `"}`, rd[:47], "not standard base64"},
		{"line break", `{"svn":"1","report_data":"` + std[:20] + `\n` + std[20:] + `"}`, rd, "line break"},
		{"no svn", `{"report_data":"` + std + `"}`, rd, "missing field `svn`"},
		{"svn number", `{"svn":1,"report_data":"` + std + `"}`, rd, "`svn` is not a string"},
		{"report_data null", `{"svn":"1","report_data":null}`, rd, "`report_data` is not a string"},
		{"SVN is not svn", `{"SVN":"1","report_data":"` + std + `"}`, rd, "missing field `svn`"},
		{"not an object", `["1"]`, rd, "not a JSON object"},
		{"null", `null`, rd, "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims, err := sample.New().Verify(context.Background(), json.RawMessage(tt.evidence), tt.want)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("Verify = %v, want error containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if claims["report_data"] != hex.EncodeToString(tt.want) {
				t.Errorf("report_data claim = %v, want hex %x", claims["report_data"], tt.want)
			}
			for _, k := range []string{"svn", "launch_digest", "platform_version", "debug"} {
				if _, ok := claims[k]; !ok {
					t.Errorf("claim %s missing from %v", k, claims)
				}
			}
		})
	}
}

// The sample attester's evidence verifies, for every binding hash size.
func TestAttesterRoundTrip(t *testing.T) {
	for _, n := range []int{32, 48, 64} {
		rd := bytes.Repeat([]byte{byte(n)}, n)
		ev, err := sampleattester.New().Evidence(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		claims, err := sample.New().Verify(context.Background(), ev, rd)
		if err != nil {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if claims["svn"] != "1" {
			t.Errorf("svn = %v", claims["svn"])
		}
	}
}

func TestVerifyCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := sample.New().Verify(ctx, json.RawMessage(`{"svn":"1"}`), nil); err == nil {
		t.Error("Verify with a canceled context succeeded")
	}
}
