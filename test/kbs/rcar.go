package kbs

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/teekey"
)

// KnownTee reports whether name is a TEE name of kbs-types 0.16, the Tee
// enum a trustee Request must name. A Request naming anything else fails
// to deserialize here too, unless a verifier is registered under the name.
func KnownTee(name string) bool {
	switch name {
	case "az-snp-vtpm", "az-tdx-vtpm", "nvidia", "sgx", "snp", "tdx", "cca", "csv",
		"se", "hygondcu", "tpm", "sample", "sampledevice":
		return true
	}
	return false
}

// decodeRequest decodes an /auth body as serde decodes kbs_types::Request.
func (s *Server) decodeRequest(body []byte) (protocol.Request, error) {
	m, err := object(body)
	if err != nil {
		return protocol.Request{}, err
	}
	var req protocol.Request
	if req.Version, err = m.str("version"); err != nil {
		return req, err
	}
	if req.Tee, err = m.str("tee"); err != nil {
		return req, err
	}
	if _, ok := s.verifiers[req.Tee]; !ok && !KnownTee(req.Tee) {
		return req, fmt.Errorf("field `tee`: unknown TEE %q", req.Tee)
	}
	if req.ExtraParams, err = m.value("extra-params"); err != nil {
		return req, err
	}
	return req, nil
}

// selectHash decides the binding hash of a session and the challenge's
// extra-params. With a configured algorithm, a client that lists its
// supported-hash-algorithms must list it (trustee's rule for IBM SE).
func (s *Server) selectHash(extra json.RawMessage) (protocol.HashAlgorithm, json.RawMessage, error) {
	h := s.cfg.HashAlgorithm
	if h == "" {
		return protocol.SHA384, json.RawMessage(`""`), nil
	}
	if kind(extra) == "map" {
		m, err := object(extra)
		if err != nil {
			return "", nil, fmt.Errorf("extra-params: %w", err)
		}
		if raw, ok := m["supported-hash-algorithms"]; ok {
			var list []any
			if err := json.Unmarshal(raw, &list); err != nil {
				return "", nil, fmt.Errorf("expected hash algorithm array, found %s", kind(raw))
			}
			supported := false
			for _, v := range list {
				if name, ok := v.(string); ok && strings.EqualFold(name, string(h)) {
					supported = true
				}
			}
			if !supported {
				return "", nil, fmt.Errorf("TEE does not support %s", h)
			}
		}
	}
	sel, err := json.Marshal(map[string]string{"selected-hash-algorithm": string(h)})
	if err != nil {
		return "", nil, err
	}
	return h, sel, nil
}

// auth handles POST /kbs/v0/auth.
func (s *Server) auth(w http.ResponseWriter, body []byte) *kbsError {
	kerr := s.doAuth(w, body)
	if kerr != nil {
		s.stats.authFailed.Add(1)
		return kerr
	}
	s.stats.auth.Add(1)
	return nil
}

func (s *Server) doAuth(w http.ResponseWriter, body []byte) *kbsError {
	req, err := s.decodeRequest(body)
	if err != nil {
		return errAuth(fmt.Errorf("deserialize Request: %w", err))
	}
	if err := checkVersion(req.Version); err != nil {
		return errAuth(err)
	}
	if _, ok := s.verifiers[req.Tee]; !ok {
		return errAuth(fmt.Errorf("TEE %q is not supported by this KBS: no verifier", req.Tee))
	}
	hash, extra, err := s.selectHash(req.ExtraParams)
	if err != nil {
		return errAuth(fmt.Errorf("Attestation Service generate challenge failed: %w", err))
	}
	nonce, err := newNonce()
	if err != nil {
		return errAuth(err)
	}
	id, err := newSessionID()
	if err != nil {
		return errAuth(err)
	}
	now := s.cfg.Now()
	sess := &session{id: id, tee: req.Tee, nonce: nonce, hash: hash, expires: now.Add(s.cfg.SessionTimeout)}
	if err := s.sessions.add(sess, now); err != nil {
		return errAuth(err)
	}
	return writeJSON(w, protocol.Challenge{Nonce: nonce, ExtraParams: extra}, sess.cookie())
}

// decodeTeePubKey decodes a tee-pubkey as serde decodes kbs_types::TeePubKey
// (internally tagged by kty; unknown members ignored).
func decodeTeePubKey(m members) (protocol.TeePubKey, error) {
	var k protocol.TeePubKey
	var err error
	if k.Kty, err = m.str("kty"); err != nil {
		return k, err
	}
	var fields []*string
	var names []string
	switch k.Kty {
	case "EC":
		fields, names = []*string{&k.Crv, &k.Alg, &k.X, &k.Y}, []string{"crv", "alg", "x", "y"}
	case "RSA":
		fields, names = []*string{&k.Alg, &k.N, &k.E}, []string{"alg", "n", "e"}
	default:
		return k, fmt.Errorf("unknown variant `%s`, expected `RSA` or `EC`", k.Kty)
	}
	for i, f := range fields {
		if *f, err = m.str(names[i]); err != nil {
			return k, err
		}
	}
	return k, nil
}

// decodeAttestation decodes an /attest body as serde decodes
// kbs_types::Attestation.
func decodeAttestation(body []byte) (protocol.Attestation, error) {
	var att protocol.Attestation
	m, err := object(body)
	if err != nil {
		return att, err
	}
	rd, err := m.obj("runtime-data")
	if err != nil {
		return att, err
	}
	if att.RuntimeData.Nonce, err = rd.str("nonce"); err != nil {
		return att, fmt.Errorf("runtime-data: %w", err)
	}
	pk, err := rd.obj("tee-pubkey")
	if err != nil {
		return att, fmt.Errorf("runtime-data: %w", err)
	}
	if att.RuntimeData.TeePubKey, err = decodeTeePubKey(pk); err != nil {
		return att, fmt.Errorf("runtime-data: tee-pubkey: %w", err)
	}
	ev, err := m.obj("tee-evidence")
	if err != nil {
		return att, err
	}
	if att.TeeEvidence.Primary, err = ev.value("primary_evidence"); err != nil {
		return att, fmt.Errorf("tee-evidence: %w", err)
	}
	if att.TeeEvidence.Additional, err = ev.str("additional_evidence"); err != nil {
		return att, fmt.Errorf("tee-evidence: %w", err)
	}
	if raw, ok := m["init-data"]; ok && kind(raw) != "null" {
		id, err := m.obj("init-data")
		if err != nil {
			return att, err
		}
		att.InitData = &protocol.InitData{}
		if att.InitData.Format, err = id.str("format"); err != nil {
			return att, fmt.Errorf("init-data: %w", err)
		}
		if att.InitData.Body, err = id.str("body"); err != nil {
			return att, fmt.Errorf("init-data: %w", err)
		}
	}
	return att, nil
}

// attest handles POST /kbs/v0/attest.
func (s *Server) attest(w http.ResponseWriter, r *http.Request, body []byte) *kbsError {
	kerr := s.doAttest(w, r, body)
	if kerr != nil {
		s.stats.attestFailed.Add(1)
	}
	return kerr
}

func (s *Server) doAttest(w http.ResponseWriter, r *http.Request, body []byte) *kbsError {
	c, err := r.Cookie(SessionCookie)
	if err != nil {
		return errAttest(errors.New("cookie not found"))
	}
	att, err := decodeAttestation(body)
	if err != nil {
		return errAttest(fmt.Errorf("deserialize Attestation: %w", err))
	}
	now := s.cfg.Now()
	sess, err := s.sessions.get(c.Value, now)
	if err != nil {
		return errAttest(err)
	}
	if sess.token != "" {
		s.stats.attestReused.Add(1)
		return writeJSON(w, protocol.TokenResponse{Token: sess.token}, sess.cookie())
	}
	if att.RuntimeData.Nonce != sess.nonce {
		return errAttest(errors.New("nonce mismatch: the runtime-data nonce is not the one this session was challenged with"))
	}
	key := att.RuntimeData.TeePubKey
	if _, err := teekey.ParsePublic(key); err != nil {
		return errAttest(err)
	}
	var initData *parsedInitData
	if att.InitData != nil {
		if initData, err = parseInitData(att.InitData); err != nil {
			return errAttest(err)
		}
	}
	additional := att.TeeEvidence.Additional
	digest, err := protocol.ReportData(sess.hash, sess.nonce, key, additional)
	if err != nil {
		return errAttest(err)
	}
	primary, err := s.verify(r, sess.tee, att.TeeEvidence.Primary, digest)
	if err != nil {
		return errAttest(err)
	}
	primary.runtime = map[string]any{"nonce": sess.nonce, "tee-pubkey": key, "additional-evidence": additional}
	primary.initData = initData
	devices, err := s.verifyDevices(r, sess, key, additional)
	if err != nil {
		return errAttest(err)
	}
	token, err := s.key.sign(earClaims(now, s.cfg.TokenLifetime, primary, devices))
	if err != nil {
		return errAttest(err)
	}
	stored, err := s.sessions.attest(sess.id, token, now)
	if err != nil {
		return errAttest(err)
	}
	s.stats.attest.Add(1)
	return writeJSON(w, protocol.TokenResponse{Token: stored.token}, stored.cookie())
}

// verify runs the TEE's verifier.
func (s *Server) verify(r *http.Request, tee string, evidence json.RawMessage, digest []byte) (appraisal, error) {
	v, ok := s.verifiers[tee]
	if !ok {
		return appraisal{}, fmt.Errorf("TEE %q is not supported by this KBS: no verifier", tee)
	}
	claims, err := v.Verify(r.Context(), evidence, digest)
	if err != nil {
		return appraisal{}, fmt.Errorf("verify %s evidence: %w", tee, err)
	}
	if claims == nil {
		claims = map[string]any{}
	}
	return appraisal{tee: tee, claims: claims}, nil
}

// verifyDevices verifies the additional evidence, a JSON object of TEE name
// to evidence held in a string, each bound to H(JCS(runtime data)).
func (s *Server) verifyDevices(r *http.Request, sess session, key protocol.TeePubKey, additional string) ([]appraisal, error) {
	if additional == "" {
		return nil, nil
	}
	m, err := object([]byte(additional))
	if err != nil {
		return nil, fmt.Errorf("additional_evidence: %w", err)
	}
	rd := protocol.RuntimeData{Nonce: sess.nonce, TeePubKey: key}
	digest, err := protocol.DeviceReportData(sess.hash, rd)
	if err != nil {
		return nil, err
	}
	tees := make([]string, 0, len(m))
	for tee := range m {
		tees = append(tees, tee)
	}
	slices.Sort(tees)
	out := make([]appraisal, 0, len(tees))
	for _, tee := range tees {
		a, err := s.verify(r, tee, m[tee], digest)
		if err != nil {
			return nil, fmt.Errorf("additional evidence: %w", err)
		}
		a.runtime = map[string]any{"nonce": sess.nonce, "tee-pubkey": key}
		out = append(out, a)
	}
	return out, nil
}
