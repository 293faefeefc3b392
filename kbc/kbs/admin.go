package kbs

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/resource"
)

// Admin token parameters, as trustee's kbs-client and coco_keyprovider
// mint them.
const (
	// AdminTokenLifetime is the exp - iat of admin tokens.
	AdminTokenLifetime = 2 * time.Hour
	// AdminRole is the role claim; trustee v0.21+ requires one.
	AdminRole = "admin"
	// adminTimeout bounds each admin request.
	adminTimeout     = 30 * time.Second
	maxAdminRespBody = 1 << 20
)

// Admin is a client of the KBS admin API for resources: it writes and
// deletes resources with an EdDSA admin token. It is the tenant side
// (kbs-client "config set-resource", coco_keyprovider's KEK registration)
// and never runs in the guest. It is safe for concurrent use.
type Admin struct {
	base *url.URL
	key  ed25519.PrivateKey
	http *http.Client
	now  func() time.Time
}

// NewAdmin returns an Admin for the KBS at kbsURL (http or https), signing
// with the Ed25519 admin key. certPEM, if not empty, adds root CAs for the
// KBS's certificate to the system roots. It does not contact the KBS.
func NewAdmin(kbsURL string, key ed25519.PrivateKey, certPEM []byte) (*Admin, error) {
	base, err := url.Parse(strings.TrimRight(kbsURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("kbs admin: URL %q is not an http(s) URL", kbsURL)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("kbs admin: admin key is %d bytes, want an Ed25519 private key (%d)", len(key), ed25519.PrivateKeySize)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = http.ProxyFromEnvironment
	if len(certPEM) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(certPEM) {
			return nil, fmt.Errorf("kbs admin: the KBS certificate holds no PEM certificate")
		}
		t.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &Admin{
		base: base,
		key:  key,
		http: &http.Client{Transport: t, Timeout: adminTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		now: time.Now,
	}, nil
}

// Token mints an admin token as trustee's kbs-client does: header
// {"alg":"EdDSA","typ":"JWT"}, claims iat, exp (iat + AdminTokenLifetime)
// and role "admin".
func (a *Admin) Token() (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.EdDSA, Key: a.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("kbs admin token: %w", err)
	}
	now := a.now()
	tok, err := jwt.Signed(signer).Claims(map[string]any{
		"iat":  now.Unix(),
		"exp":  now.Add(AdminTokenLifetime).Unix(),
		"role": AdminRole,
	}).Serialize()
	if err != nil {
		return "", fmt.Errorf("kbs admin token: %w", err)
	}
	return tok, nil
}

// SetResource writes data as the resource uri names (POST
// /kbs/v0/<plugin>/<path>, application/octet-stream). Unlike upstream's
// tools it checks the answer: anything but 2xx is an *Error carrying the
// KBS's ErrorInformation.
func (a *Admin) SetResource(ctx context.Context, uri resource.URI, data []byte) error {
	return a.do(ctx, "set resource", http.MethodPost, uri, data)
}

// DeleteResource deletes the resource uri names (DELETE
// /kbs/v0/<plugin>/<path>).
func (a *Admin) DeleteResource(ctx context.Context, uri resource.URI) error {
	return a.do(ctx, "delete resource", http.MethodDelete, uri, nil)
}

func (a *Admin) do(ctx context.Context, step, method string, uri resource.URI, body []byte) error {
	if err := uri.Validate(); err != nil {
		return fmt.Errorf("kbs %s: %w", step, err)
	}
	if uri.Query != "" {
		return fmt.Errorf("kbs %s %s: an admin request takes no query", step, uri)
	}
	path := uri.HTTPPath()
	fail := func(status int, info *protocol.ErrorInformation, err error) error {
		return &Error{Step: step, URL: a.base.String() + path, Status: status, Info: info, Err: err}
	}
	tok, err := a.Token()
	if err != nil {
		return fail(0, nil, err)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base.String()+path, rd)
	if err != nil {
		return fail(0, nil, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/octet-stream")
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("User-Agent", "guestd-kbs-admin/"+protocol.Version)
	resp, err := a.http.Do(req)
	if err != nil {
		return fail(0, nil, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAdminRespBody))
	if err != nil {
		return fail(resp.StatusCode, nil, fmt.Errorf("read response: %w", err))
	}
	if resp.StatusCode/100 == 2 {
		return nil
	}
	var ei protocol.ErrorInformation
	if json.Unmarshal(data, &ei) == nil && (ei.Type != "" || ei.Detail != "") {
		return fail(resp.StatusCode, &ei, nil)
	}
	var cause error
	if text := strings.TrimSpace(string(data)); text != "" {
		if len(text) > 200 {
			text = text[:200] + "…"
		}
		cause = fmt.Errorf("%s", text)
	}
	return fail(resp.StatusCode, nil, cause)
}
