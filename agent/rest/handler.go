package rest

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/guestd/guestd/kbc/resource"
)

const (
	contentJSON   = "application/json"
	contentOctets = "application/octet-stream"

	aaRoot         = "/aa"
	resourcePrefix = "/cdh/resource/"
)

// handler routes the API. aa and res are nil when their feature is off.
type handler struct {
	aa      Attestation
	res     Resources
	version string
	feature string
	log     *slog.Logger
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !loopbackPeer(r.RemoteAddr) {
		h.log.Warn("refusing request from a non-loopback peer", "peer", r.RemoteAddr)
		writeText(w, http.StatusForbidden, "forbidden: only loopback peers may use this API")
		return
	}
	// Route on the path as sent, escapes included, as upstream does.
	p := r.URL.EscapedPath()
	switch {
	case p == "/info":
		if allow(w, r, http.MethodGet) {
			h.info(w)
		}
	case strings.HasPrefix(p, aaRoot+"/"):
		h.attestation(w, r, p[len(aaRoot):])
	case strings.HasPrefix(p, "/cdh/"):
		h.resource(w, r, p)
	default:
		writeText(w, http.StatusNotFound, "not found")
	}
}

// allow reports whether r uses method, answering 405 when it does not.
func allow(w http.ResponseWriter, r *http.Request, method string) bool {
	if r.Method == method {
		return true
	}
	w.Header().Set("Allow", method)
	writeText(w, http.StatusMethodNotAllowed, "method not allowed: use "+method)
	return false
}

func (h *handler) info(w http.ResponseWriter) {
	v := struct {
		Version        string   `json:"version"`
		Tee            *string  `json:"tee,omitempty"`
		AdditionalTees []string `json:"additional_tees,omitzero"`
		Feature        string   `json:"feature"`
	}{Version: h.version, Feature: h.feature}
	if h.aa != nil {
		tee := h.aa.TeeType()
		v.Tee = &tee
		v.AdditionalTees = append([]string{}, h.aa.AdditionalTees()...)
	}
	h.writeJSON(w, v)
}

func (h *handler) attestation(w http.ResponseWriter, r *http.Request, sub string) {
	if h.aa == nil {
		writeText(w, http.StatusNotFound, "not found: the attestation feature is not enabled")
		return
	}
	switch sub {
	case "/evidence":
		if allow(w, r, http.MethodGet) {
			h.evidence(w, r, "evidence", h.aa.Evidence)
		}
	case "/additional-evidence":
		if allow(w, r, http.MethodGet) {
			h.evidence(w, r, "additional evidence", h.aa.AdditionalEvidence)
		}
	case "/token":
		if allow(w, r, http.MethodGet) {
			h.token(w, r)
		}
	case "/aael":
		if allow(w, r, http.MethodPost) {
			h.aael(w, r)
		}
	default:
		writeText(w, http.StatusNotFound, "not found")
	}
}

type evidenceFunc = func(ctx context.Context, runtimeData []byte) ([]byte, error)

func (h *handler) evidence(w http.ResponseWriter, r *http.Request, what string, get evidenceFunc) {
	q := parseQuery(r.URL.RawQuery)
	raw, ok := q["runtime_data"]
	if !ok {
		writeText(w, http.StatusBadRequest, "bad request: missing query parameter runtime_data")
		return
	}
	enc, hasEnc := q["encoding"]
	data, err := decodeRuntimeData(raw, enc, hasEnc)
	if err != nil {
		writeText(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	h.log.Debug("getting "+what, "runtime_data_len", len(data))
	ev, err := get(r.Context(), data)
	if err != nil {
		h.log.Error("getting "+what+" failed", "err", err)
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBytes(w, contentOctets, ev)
}

// decodeRuntimeData applies the encoding query parameter: none means the
// value's bytes as they are, "base64" URL-safe base64 without padding.
func decodeRuntimeData(v, enc string, hasEnc bool) ([]byte, error) {
	if !hasEnc {
		return []byte(v), nil
	}
	if enc != "base64" {
		return nil, fmt.Errorf("unsupported runtime_data encoding %q (only base64 is known)", enc)
	}
	// The decoder would skip CR and LF; the encoding has neither.
	if strings.ContainsAny(v, "\r\n") {
		return nil, errors.New("runtime_data is not URL-safe base64 without padding")
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(v)
	if err != nil {
		return nil, fmt.Errorf("runtime_data is not URL-safe base64 without padding: %w", err)
	}
	return b, nil
}

func (h *handler) token(w http.ResponseWriter, r *http.Request) {
	tt := parseQuery(r.URL.RawQuery)["token_type"]
	if tt == "" {
		writeText(w, http.StatusBadRequest, "bad request: missing query parameter token_type")
		return
	}
	h.log.Debug("getting token", "token_type", tt)
	reply, err := h.aa.Token(r.Context(), tt)
	if err != nil {
		h.log.Error("getting token failed", "token_type", tt, "err", err)
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	tok, err := extractToken(reply)
	if err != nil {
		h.log.Error("attestation agent's token reply is unusable", "token_type", tt, "err", err)
		writeText(w, http.StatusInternalServerError, "token reply unusable: "+err.Error())
		return
	}
	body, err := json.Marshal(struct {
		Token string `json:"token"`
	}{tok})
	if err != nil {
		writeText(w, http.StatusInternalServerError, "encoding the token: "+err.Error())
		return
	}
	writeBytes(w, contentOctets, body)
}

// extractToken returns the token in an agent's reply: the "token" string of
// a JSON object (other fields, such as upstream's tee_keypair, are
// discarded), a JSON string, or else the reply's text. Errors never quote
// the reply.
func extractToken(reply []byte) (string, error) {
	t := bytes.TrimSpace(reply)
	var tok string
	switch {
	case len(t) == 0:
		return "", errors.New("empty token")
	case t[0] == '{':
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(t, &obj); err != nil {
			return "", errors.New("reply looks like a JSON object but does not parse")
		}
		raw, ok := obj["token"]
		if !ok {
			return "", errors.New(`reply has no "token" field`)
		}
		if err := json.Unmarshal(raw, &tok); err != nil {
			return "", errors.New(`reply's "token" field is not a string`)
		}
	case t[0] == '"' && json.Valid(t):
		if err := json.Unmarshal(t, &tok); err != nil {
			return "", errors.New("reply is not a JSON string")
		}
	default:
		if !utf8.Valid(t) {
			return "", errors.New("token is not UTF-8 text")
		}
		tok = string(t)
	}
	if tok == "" {
		return "", errors.New("empty token")
	}
	// Belt and braces: a token never holds a PEM key; refuse to pass one on.
	if strings.Contains(tok, "PRIVATE KEY") {
		return "", errors.New("token carries private key material")
	}
	return tok, nil
}

func (h *handler) aael(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			writeText(w, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("request body exceeds %d bytes", MaxBodyBytes))
			return
		}
		writeText(w, http.StatusBadRequest, "bad request: reading the body: "+err.Error())
		return
	}
	ev, err := parseAAEL(body)
	if err != nil {
		writeText(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	h.log.Debug("extending runtime measurement", "domain", ev.domain, "operation", ev.operation)
	err = h.aa.ExtendRuntimeMeasurement(r.Context(), ev.domain, ev.operation, ev.content, nil)
	var res aaelResult
	switch {
	case err == nil:
		res.Success = "true"
	case errors.Is(err, ErrMeasurementNotSupported):
		res = aaelResult{Success: "false", Message: "the platform does not support runtime measurement"}
	case errors.Is(err, ErrMeasurementNotEnabled):
		res = aaelResult{Success: "false", Message: "the attestation agent's event log is not enabled"}
	default:
		h.log.Error("extending runtime measurement failed", "domain", ev.domain, "operation", ev.operation, "err", err)
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	h.writeJSON(w, res)
}

type aaelResult struct {
	Success string `json:"success"`
	Message string `json:"message,omitempty"`
}

type aaelEvent struct{ domain, operation, content string }

// parseAAEL reads {"domain","operation","content"}: an object whose three
// keys (matched case-sensitively) are strings; other keys are ignored.
func parseAAEL(body []byte) (aaelEvent, error) {
	if !utf8.Valid(body) {
		return aaelEvent{}, errors.New("AAEL event is not UTF-8")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		return aaelEvent{}, fmt.Errorf("AAEL event is not a JSON object: %w", err)
	}
	var ev aaelEvent
	for _, f := range []struct {
		key string
		dst *string
	}{{"domain", &ev.domain}, {"operation", &ev.operation}, {"content", &ev.content}} {
		raw, ok := obj[f.key]
		if !ok {
			return aaelEvent{}, fmt.Errorf("AAEL event has no %q field", f.key)
		}
		if err := json.Unmarshal(raw, f.dst); err != nil || bytes.Equal(raw, []byte("null")) {
			return aaelEvent{}, fmt.Errorf("AAEL event field %q is not a string", f.key)
		}
	}
	return ev, nil
}

func (h *handler) resource(w http.ResponseWriter, r *http.Request, p string) {
	if h.res == nil {
		writeText(w, http.StatusNotFound, "not found: the resource feature is not enabled")
		return
	}
	path, ok := strings.CutPrefix(p, resourcePrefix)
	if !ok || strings.Count(path, "/") != 2 {
		writeText(w, http.StatusNotFound, "not found: use /cdh/resource/<repo>/<type>/<tag>")
		return
	}
	if !allow(w, r, http.MethodGet) {
		return
	}
	u, err := resource.FromPath(path)
	if err != nil {
		writeText(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	uri := u.String()
	h.log.Debug("getting resource", "uri", uri)
	data, err := h.res.GetResource(r.Context(), uri)
	if err != nil {
		h.log.Error("getting resource failed", "uri", uri, "err", err)
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	writeBytes(w, contentOctets, data)
}

// loopbackPeer reports whether addr, a request's RemoteAddr, is a TCP peer
// in 127.0.0.0/8 or ::1 (an IPv4-mapped 127/8 address counts). Anything
// unparsable, such as a Unix socket peer, is not.
func loopbackPeer(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return false
	}
	return ap.Addr().Unmap().IsLoopback()
}

func (h *handler) writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		h.log.Error("encoding a response failed", "err", err)
		writeText(w, http.StatusInternalServerError, "encoding the response: "+err.Error())
		return
	}
	writeBytes(w, contentJSON, b)
}

func writeBytes(w http.ResponseWriter, contentType string, b []byte) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func writeText(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg)
}
