package service_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/guestd/guestd/agent/rest"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester/sample"
)

// TestREST serves agent/rest from the same AA and CDH over loopback HTTP:
// resources and tokens come from the shared KBS client (one attestation),
// the token never carries the TEE key, and errors keep their cause.
func TestREST(t *testing.T) {
	e := newKBSEnv(t, "")
	e.put(t, "kbs:///default/key/1", []byte("k1"))
	aa, err := service.NewAA(service.AAConfig{Attester: sample.New(), KBS: e.client, ExposeTEEKey: true, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cdh := service.NewCDH(service.CDHConfig{KBC: e.client, Logger: testLogger(t)})
	h, err := rest.New(rest.Config{Features: rest.FeatureAll, Version: "test"}, service.RESTAttestation(aa), service.RESTResources(cdh), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, tc := range []struct {
		method, path, body string
		status             int
		check              func(t *testing.T, body string)
	}{
		{"GET", "/cdh/resource/default/key/1", "", 200, func(t *testing.T, b string) {
			if b != "k1" {
				t.Errorf("resource %q", b)
			}
		}},
		{"GET", "/aa/token?token_type=kbs", "", 200, func(t *testing.T, b string) {
			var obj map[string]string
			if err := json.Unmarshal([]byte(b), &obj); err != nil || len(obj) != 1 || obj["token"] == "" {
				t.Errorf("token %s (%v): want {\"token\"} only", b, err)
			}
		}},
		{"GET", "/aa/evidence?runtime_data=nonce", "", 200, func(t *testing.T, b string) {
			var ev sample.Evidence
			if err := json.Unmarshal([]byte(b), &ev); err != nil || ev.ReportData != base64.StdEncoding.EncodeToString([]byte("nonce")) {
				t.Errorf("evidence %s (%v)", b, err)
			}
		}},
		{"GET", "/aa/evidence?runtime_data=" + strings.Repeat("x", 65), "", 500, func(t *testing.T, b string) {
			if !strings.Contains(b, "at most 64") || !strings.Contains(b, "[request ") {
				t.Errorf("long runtime data: %s", b)
			}
		}},
		{"GET", "/cdh/resource/default/key/missing", "", 500, func(t *testing.T, b string) {
			if !strings.Contains(b, "resource not found") || strings.Contains(b, "rpc error") {
				t.Errorf("missing resource: %s", b)
			}
		}},
		{"POST", "/aa/aael", `{"domain":"d","operation":"o","content":"c"}`, 200, func(t *testing.T, b string) {
			if !strings.Contains(b, `"success":"false"`) || !strings.Contains(b, "not enabled") {
				t.Errorf("aael without a log: %s", b)
			}
		}},
		{"GET", "/info", "", 200, func(t *testing.T, b string) {
			var info struct {
				Tee            string   `json:"tee"`
				AdditionalTees []string `json:"additional_tees"`
			}
			if err := json.Unmarshal([]byte(b), &info); err != nil || info.Tee != "sample" || info.AdditionalTees == nil || len(info.AdditionalTees) != 0 {
				t.Errorf("info %s (%v)", b, err)
			}
		}},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			status, body := do(tc.method, tc.path, tc.body)
			if status != tc.status {
				t.Fatalf("HTTP %d, want %d: %s", status, tc.status, body)
			}
			tc.check(t, body)
		})
	}
	if s := e.kbs.Server.Stats(); s.Attest != 2 {
		// one, plus the re-attestation the KBS client does after the 401
		// trustee answers for the missing resource
		t.Errorf("KBS stats %+v: want 2 attestations", s)
	}
}
