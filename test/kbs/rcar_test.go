package kbs

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
	sampleverifier "github.com/guestd/guestd/test/kbs/verifier/sample"
)

func TestHandshakeReleasesResource(t *testing.T) {
	for _, alg := range []teekey.Algorithm{teekey.ECP256, teekey.ECP521, teekey.RSAOAEP256} {
		t.Run(string(alg), func(t *testing.T) {
			e := newEnv(t, nil)
			key := newKey(t, alg)

			r := e.do(req{method: "POST", path: "/kbs/v0/auth", body: authBody(t, "sample")})
			if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("auth: %d %q %s", r.StatusCode, r.Header.Get("Content-Type"), r.body)
			}
			var ch protocol.Challenge
			if err := json.Unmarshal(r.body, &ch); err != nil {
				t.Fatal(err)
			}
			nonce, err := base64.StdEncoding.DecodeString(ch.Nonce)
			if err != nil || len(nonce) != 32 || len(ch.Nonce) != 44 {
				t.Errorf("nonce %q: %d bytes, err %v; want 32 bytes in padded standard base64", ch.Nonce, len(nonce), err)
			}
			if string(ch.ExtraParams) != `""` {
				t.Errorf("extra-params = %s, want \"\"", ch.ExtraParams)
			}
			cookie := r.Cookies()[0]

			r = e.do(req{method: "POST", path: "/kbs/v0/attest", cookie: cookie,
				body: mustJSON(t, attestation(t, ch, key.Public(), nil))})
			if r.StatusCode != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
				t.Fatalf("attest: %d %q %s", r.StatusCode, r.Header.Get("Content-Type"), r.body)
			}
			var tr protocol.TokenResponse
			if err := json.Unmarshal(r.body, &tr); err != nil || strings.Count(tr.Token, ".") != 2 {
				t.Fatalf("attest response %s: %v", r.body, err)
			}

			got := open(t, e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie}), key)
			if got != k1 {
				t.Errorf("resource = %q, want %q", got, k1)
			}
		})
	}
}

func TestSessionCookie(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionTimeout = 7 * time.Minute })
	key := newKey(t, teekey.ECP256)
	wantExpires := start.Add(7 * time.Minute).Format(http.TimeFormat)
	re := regexp.MustCompile(`^kbs-session-id=([0-9a-f]{32}); Expires=(.+)$`)

	r := e.do(req{method: "POST", path: "/kbs/v0/auth", body: authBody(t, "sample")})
	set := r.Header.Values("Set-Cookie")
	if len(set) != 1 {
		t.Fatalf("auth Set-Cookie = %q, want one", set)
	}
	m := re.FindStringSubmatch(set[0])
	if m == nil {
		t.Fatalf("auth Set-Cookie = %q, want kbs-session-id=<32 hex>; Expires=<date> and nothing else", set[0])
	}
	id := m[1]
	if id[12] != '4' || !strings.ContainsRune("89ab", rune(id[16])) {
		t.Errorf("session id %s is not a UUID v4 (version nibble %c, variant %c)", id, id[12], id[16])
	}
	if m[2] != wantExpires {
		t.Errorf("Expires = %q, want %q", m[2], wantExpires)
	}

	var ch protocol.Challenge
	if err := json.Unmarshal(r.body, &ch); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute) // the expiry is fixed at /auth
	r = e.do(req{method: "POST", path: "/kbs/v0/attest", cookie: &http.Cookie{Name: SessionCookie, Value: id},
		body: mustJSON(t, attestation(t, ch, key.Public(), nil))})
	if r.StatusCode != http.StatusOK {
		t.Fatalf("attest: %d %s", r.StatusCode, r.body)
	}
	set = r.Header.Values("Set-Cookie")
	if len(set) != 1 || set[0] != "kbs-session-id="+id+"; Expires="+wantExpires {
		t.Errorf("attest Set-Cookie = %q, want the same cookie as /auth", set)
	}

	// Two sessions never share an id.
	_, c2 := e.auth()
	if c2.Value == id {
		t.Errorf("second session reused id %s", id)
	}
}

func TestAuthErrors(t *testing.T) {
	sha := `{"supported-hash-algorithms":["sha384"]}`
	tests := []struct {
		name   string
		body   string
		detail string // "" = success
	}{
		{"ok", `{"version":"0.4.0","tee":"sample","extra-params":` + sha + `}`, ""},
		{"extra-params null", `{"version":"0.4.0","tee":"sample","extra-params":null}`, ""},
		{"extra-params string", `{"version":"0.4.0","tee":"sample","extra-params":""}`, ""},
		{"unknown members ignored", `{"version":"0.4.0","tee":"sample","extra-params":{},"x":1}`, ""},
		{"build metadata ignored", `{"version":"0.4.0+guestd","tee":"sample","extra-params":{}}`, ""},
		{"older version", `{"version":"0.3.0","tee":"sample","extra-params":{}}`,
			"Attestation error: RCAR handshake Auth failed: KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.3.0"},
		{"newer version", `{"version":"0.5.0","tee":"sample","extra-params":{}}`,
			"KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.5.0"},
		{"pre-release", `{"version":"0.4.0-rc1","tee":"sample","extra-params":{}}`,
			"KBS Client Protocol Version Mismatch: expect =0.4.0 while the request is 0.4.0-rc1"},
		{"not semver", `{"version":"v0.4.0","tee":"sample","extra-params":{}}`, `failed to parse KBS version "v0.4.0"`},
		{"leading zero", `{"version":"0.04.0","tee":"sample","extra-params":{}}`, "invalid leading zero"},
		{"unknown TEE", `{"version":"0.4.0","tee":"foo","extra-params":{}}`, `deserialize Request: field ` + "`tee`" + `: unknown TEE "foo"`},
		{"TEE without verifier", `{"version":"0.4.0","tee":"tdx","extra-params":{}}`, `TEE "tdx" is not supported by this KBS: no verifier`},
		{"legacy TEE name", `{"version":"0.4.0","tee":"azsnpvtpm","extra-params":{}}`, `unknown TEE "azsnpvtpm"`},
		{"no extra-params", `{"version":"0.4.0","tee":"sample"}`, "missing field `extra-params`"},
		{"no version", `{"tee":"sample","extra-params":{}}`, "missing field `version`"},
		{"names are case-sensitive", `{"Version":"0.4.0","tee":"sample","extra-params":{}}`, "missing field `version`"},
		{"version not a string", `{"version":0.4,"tee":"sample","extra-params":{}}`, "field `version`: invalid type: number, expected a string"},
		{"version null", `{"version":null,"tee":"sample","extra-params":{}}`, "invalid type: null"},
		{"duplicate member", `{"version":"0.4.0","version":"0.4.0","tee":"sample","extra-params":{}}`, "duplicate field `version`"},
		{"not JSON", `{"version":`, "deserialize Request: invalid JSON"},
		{"not an object", `["0.4.0"]`, "invalid type: sequence, expected an object"},
		{"trailing data", `{"version":"0.4.0","tee":"sample","extra-params":{}} {}`, "trailing characters"},
		{"empty body", ``, "deserialize Request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			r := e.do(req{method: "POST", path: "/kbs/v0/auth", body: []byte(tt.body)})
			if tt.detail == "" {
				if r.StatusCode != http.StatusOK {
					t.Fatalf("status %d %s, want 200", r.StatusCode, r.body)
				}
				return
			}
			wantError(t, r, http.StatusUnauthorized, VariantAttestationError, tt.detail)
			if !strings.HasPrefix(string(r.body), `{"type":"https://github.com/confidential-containers/kbs/errors/AttestationError","detail":"Attestation error: RCAR handshake Auth failed: `) {
				t.Errorf("body %s: want trustee's layout and prefix", r.body)
			}
			if len(r.Cookies()) != 0 {
				t.Errorf("failed /auth set cookies %v", r.Cookies())
			}
		})
	}
}

func TestAttestErrors(t *testing.T) {
	other := newKey(t, teekey.ECP256)
	tests := []struct {
		name                     string
		noCookie, unknownSession bool
		mutate                   func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge)
		raw                      string // body instead of the attestation
		detail                   string
	}{
		{name: "no cookie", noCookie: true, detail: "RCAR handshake Attest failed: cookie not found"},
		{name: "unknown session", unknownSession: true, detail: "RCAR handshake Attest failed: session not found"},
		{name: "wrong nonce", detail: "nonce mismatch", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.RuntimeData.Nonce = base64.StdEncoding.EncodeToString(make([]byte, 32))
		}},
		{name: "key not bound", detail: "verify sample evidence: sample evidence: report_data", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			// Evidence binds another key than the one sent.
			a.TeeEvidence = attestation(t, ch, other.Public(), nil).TeeEvidence
		}},
		{name: "tampered report_data", detail: "does not match the expected binding digest", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			var ev map[string]string
			if err := json.Unmarshal(a.TeeEvidence.Primary, &ev); err != nil {
				t.Fatal(err)
			}
			rd, _ := base64.StdEncoding.DecodeString(ev["report_data"])
			rd[0] ^= 1
			ev["report_data"] = base64.StdEncoding.EncodeToString(rd)
			a.TeeEvidence.Primary = mustJSON(t, ev)
		}},
		{name: "additional evidence not in the digest", detail: "does not match the expected binding digest", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.TeeEvidence.Additional = `{"sample":{"svn":"1","report_data":""}}`
		}},
		{name: "bad tee-pubkey", detail: "tee-pubkey: point is not on P-256", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.RuntimeData.TeePubKey.X = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
		}},
		{name: "unknown key type", detail: "tee-pubkey: unknown variant `OKP`", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.RuntimeData.TeePubKey.Kty = "OKP"
		}},
		{name: "init-data not toml", detail: `init-data format "json" is not supported`, mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.InitData = &protocol.InitData{Format: "json", Body: "{}"}
		}},
		{name: "init-data bad toml", detail: "parse init-data TOML", mutate: func(t *testing.T, a *protocol.Attestation, ch protocol.Challenge) {
			a.InitData = &protocol.InitData{Format: "toml", Body: "algorithm = "}
		}},
		{name: "not JSON", raw: `{"runtime-data":`, detail: "deserialize Attestation: invalid JSON"},
		{name: "no runtime-data", raw: `{"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, detail: "missing field `runtime-data`"},
		{name: "additional_evidence not a string", detail: "field `additional_evidence`: invalid type: map",
			raw: `{"runtime-data":{"nonce":"n","tee-pubkey":{"kty":"EC","crv":"P-256","alg":"a","x":"x","y":"y"}},"tee-evidence":{"primary_evidence":{},"additional_evidence":{}}}`},
		{name: "no tee-pubkey", raw: `{"runtime-data":{"nonce":"n"},"tee-evidence":{"primary_evidence":{},"additional_evidence":""}}`, detail: "runtime-data: missing field `tee-pubkey`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, nil)
			key := newKey(t, teekey.ECP256)
			ch, cookie := e.auth()
			att := attestation(t, ch, key.Public(), nil)
			if tt.mutate != nil {
				tt.mutate(t, &att, ch)
			}
			body := mustJSON(t, att)
			if tt.raw != "" {
				body = []byte(tt.raw)
			}
			send := cookie
			if tt.noCookie {
				send = nil
			}
			if tt.unknownSession {
				send = &http.Cookie{Name: SessionCookie, Value: strings.Repeat("0", 32)}
			}
			r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: body, cookie: send})
			wantError(t, r, http.StatusUnauthorized, VariantAttestationError, tt.detail)
			if !strings.Contains(string(r.body), `"detail":"Attestation error: RCAR handshake Attest failed: `) {
				t.Errorf("body %s: want trustee's detail prefix", r.body)
			}
			if st := e.srv.Stats(); st.AttestFailed != 1 || st.Attest != 0 {
				t.Errorf("stats %+v: want 1 failed attest", st)
			}
			// The session survives a failed attest: the client may retry.
			if !tt.noCookie && !tt.unknownSession {
				e.attest(cookie, attestation(t, ch, key.Public(), nil))
			}
		})
	}
}

func TestAttestTwiceReturnsStoredToken(t *testing.T) {
	e := newEnv(t, nil)
	key := newKey(t, teekey.ECP256)
	ch, cookie := e.auth()
	tok1 := e.attest(cookie, attestation(t, ch, key.Public(), nil))
	e.clock.Advance(time.Second)
	// Even with evidence for another key, the stored token comes back.
	other := newKey(t, teekey.ECP256)
	tok2 := e.attest(cookie, attestation(t, ch, other.Public(), nil))
	if tok1 != tok2 {
		t.Error("second /attest on an attested session issued a new token")
	}
	if st := e.srv.Stats(); st.Attest != 1 || st.AttestReused != 1 {
		t.Errorf("stats %+v: want 1 attest, 1 reused", st)
	}
	// The body must still be an Attestation.
	r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: []byte(`{}`), cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "missing field `runtime-data`")
}

func TestSessionExpiry(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionTimeout = time.Minute })
	key := newKey(t, teekey.ECP256)

	ch, cookie := e.auth()
	e.clock.Advance(time.Minute) // at the expiry instant the session still lives
	e.attest(cookie, attestation(t, ch, key.Public(), nil))

	ch, cookie = e.auth()
	e.clock.Advance(time.Minute + time.Second)
	r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: mustJSON(t, attestation(t, ch, key.Public(), nil)), cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "RCAR handshake Attest failed: session expired")
	// Dropped on that access: now it is not found at all.
	r = e.do(req{method: "POST", path: "/kbs/v0/attest", body: mustJSON(t, attestation(t, ch, key.Public(), nil)), cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "session not found")

	// An attested session that expired no longer yields its token.
	cookie, _, _ = e.handshake()
	e.clock.Advance(2 * time.Minute)
	r = e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantTokenNotFound, "Attestation Token not found")
}

func TestSessionSweep(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.SessionTimeout = time.Minute })
	for range 3 {
		e.auth()
	}
	if n := e.srv.Stats().Sessions; n != 3 {
		t.Fatalf("sessions = %d, want 3", n)
	}
	e.clock.Advance(2 * time.Minute)
	e.auth()
	if n := e.srv.Stats().Sessions; n != 1 {
		t.Errorf("sessions after sweep = %d, want 1", n)
	}
}

func TestSelectedHash(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.HashAlgorithm = protocol.SHA512 })
	key := newKey(t, teekey.ECP256)
	ch, cookie := e.auth()
	if string(ch.ExtraParams) != `{"selected-hash-algorithm":"sha512"}` {
		t.Fatalf("extra-params = %s", ch.ExtraParams)
	}
	if h, err := ch.HashAlgorithm(); err != nil || h != protocol.SHA512 {
		t.Fatalf("HashAlgorithm() = %q, %v", h, err)
	}

	// Evidence bound with the default hash fails ...
	d384, err := protocol.ReportData(protocol.SHA384, ch.Nonce, key.Public(), "")
	if err != nil {
		t.Fatal(err)
	}
	bad := protocol.Attestation{
		RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key.Public()},
		TeeEvidence: protocol.CompositeEvidence{Primary: evidence(t, d384)},
	}
	r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: mustJSON(t, bad), cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "does not match the expected binding digest")

	// ... evidence bound with SHA-512 (64 bytes) passes and releases.
	e.attest(cookie, attestation(t, ch, key.Public(), nil))
	if got := open(t, e.do(req{method: "GET", path: "/kbs/v0/resource/default/key/k1", cookie: cookie}), key); got != k1 {
		t.Errorf("resource = %q", got)
	}

	// A client that lists its hashes without sha512 is refused.
	r = e.do(req{method: "POST", path: "/kbs/v0/auth",
		body: []byte(`{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["sha256","SHA384"]}}`)})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "TEE does not support sha512")
	r = e.do(req{method: "POST", path: "/kbs/v0/auth",
		body: []byte(`{"version":"0.4.0","tee":"sample","extra-params":{"supported-hash-algorithms":["SHA512"]}}`)})
	if r.StatusCode != http.StatusOK {
		t.Errorf("auth listing SHA512: %d %s", r.StatusCode, r.body)
	}
}

func TestAdditionalEvidence(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Verifiers["sampledevice"] = sampleverifier.New() })
	key := newKey(t, teekey.ECP256)
	ch, cookie := e.auth()
	rd := protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key.Public()}
	devDigest, err := protocol.DeviceReportData(protocol.SHA384, rd)
	if err != nil {
		t.Fatal(err)
	}
	additional := string(mustJSON(t, map[string]json.RawMessage{"sampledevice": evidence(t, devDigest)}))
	digest, err := protocol.ReportData(protocol.SHA384, ch.Nonce, key.Public(), additional)
	if err != nil {
		t.Fatal(err)
	}
	att := protocol.Attestation{RuntimeData: rd, TeeEvidence: protocol.CompositeEvidence{Primary: evidence(t, digest), Additional: additional}}
	claims := payload(t, e.attest(cookie, att))
	gpu, ok := pointer(claims, "/submods/gpu0/"+AnnotatedClaim)
	if !ok {
		t.Fatalf("no gpu0 submod in %v", claims["submods"])
	}
	g := gpu.(map[string]any)
	if _, ok := g["sampledevice"]; !ok || g["report_data"] != hex.EncodeToString(devDigest) {
		t.Errorf("gpu0 annotated evidence = %v", g)
	}
	if rdc, _ := pointer(claims, "/submods/cpu0/"+AnnotatedClaim+"/runtime_data_claims/additional-evidence"); rdc != additional {
		t.Errorf("cpu0 additional-evidence = %v", rdc)
	}

	// Device evidence bound to the primary digest instead fails.
	ch, cookie = e.auth()
	rd = protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key.Public()}
	wrong := string(mustJSON(t, map[string]json.RawMessage{"sampledevice": evidence(t, make([]byte, 48))}))
	digest, err = protocol.ReportData(protocol.SHA384, ch.Nonce, key.Public(), wrong)
	if err != nil {
		t.Fatal(err)
	}
	att = protocol.Attestation{RuntimeData: rd, TeeEvidence: protocol.CompositeEvidence{Primary: evidence(t, digest), Additional: wrong}}
	r := e.do(req{method: "POST", path: "/kbs/v0/attest", body: mustJSON(t, att), cookie: cookie})
	wantError(t, r, http.StatusUnauthorized, VariantAttestationError, "additional evidence: verify sampledevice evidence")
}

func TestConcurrentHandshakes(t *testing.T) {
	e := newEnv(t, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	ab := string(authBody(t, "sample"))
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key, err := teekey.Generate(teekey.ECP256)
			if err != nil {
				errs <- err
				return
			}
			// Fresh requests without t.Fatal (not allowed off the test goroutine).
			res, err := e.client.Post(e.hs.URL+"/kbs/v0/auth", "application/json", strings.NewReader(ab))
			if err != nil {
				errs <- err
				return
			}
			var ch protocol.Challenge
			err = json.NewDecoder(res.Body).Decode(&ch)
			res.Body.Close()
			if err != nil {
				errs <- err
				return
			}
			digest, err := protocol.ReportData(protocol.SHA384, ch.Nonce, key.Public(), "")
			if err != nil {
				errs <- err
				return
			}
			ev, err := json.Marshal(map[string]string{"svn": "1", "report_data": base64.StdEncoding.EncodeToString(digest)})
			if err != nil {
				errs <- err
				return
			}
			att, err := json.Marshal(protocol.Attestation{
				RuntimeData: protocol.RuntimeData{Nonce: ch.Nonce, TeePubKey: key.Public()},
				TeeEvidence: protocol.CompositeEvidence{Primary: ev},
			})
			if err != nil {
				errs <- err
				return
			}
			hr, err := http.NewRequest("POST", e.hs.URL+"/kbs/v0/attest", strings.NewReader(string(att)))
			if err != nil {
				errs <- err
				return
			}
			hr.AddCookie(res.Cookies()[0])
			res, err = e.client.Do(hr)
			if err != nil {
				errs <- err
				return
			}
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("attest %d: status %d", i, res.StatusCode)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := e.srv.Stats(); st.Auth != 16 || st.Attest != 16 || st.Sessions != 16 {
		t.Errorf("stats %+v", st)
	}
}
