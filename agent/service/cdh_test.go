package service_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/sealed"
	testkbs "github.com/guestd/guestd/test/kbs"
)

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestGetResourceErrors: the error code table for GetResource, on every
// transport, against the real test KBS.
func TestGetResourceErrors(t *testing.T) {
	e := newKBSEnv(t, "")
	e.put(t, "kbs:///default/key/1", []byte("k1"))
	e.put(t, "kbs:///default/secret/1", []byte("s1"))
	deny, err := testkbs.NewPolicy(true, testkbs.Rule{Resource: "default/secret/*", Allow: false})
	if err != nil {
		t.Fatal(err)
	}
	e.kbs.Server.SetPolicy(deny)
	down, err := kbs.New(kbs.Config{URL: "http://" + closedAddr(t), Attester: sample.New(), Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cdh := service.NewCDH(service.CDHConfig{KBC: e.client, Logger: testLogger(t)})
	noKBS := service.NewCDH(service.CDHConfig{KBC: down, Logger: testLogger(t)})
	noKBC := service.NewCDH(service.CDHConfig{Logger: testLogger(t)})

	// The caller's deadline ends a fetch from a KBS that does not answer.
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(stop) })
	slow, err := kbs.New(kbs.Config{URL: hang.URL, Attester: sample.New(), Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = service.NewCDH(service.CDHConfig{KBC: slow}).GetResource(short, &cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"})
	wantCode(t, "caller's deadline", err, codes.DeadlineExceeded, "kbs:///default/key/1", "kbs auth")

	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			_, side := tr.serve(t, nil, cdh, nil)
			_, downSide := tr.serve(t, nil, noKBS, nil)
			_, noneSide := tr.serve(t, nil, noKBC, nil)
			for _, tc := range []struct {
				name  string
				c     cdhpb.TTRPCGetResourceServiceService
				uri   string
				code  codes.Code
				parts []string
			}{
				{"ok", side.res, "kbs:///default/key/1", codes.OK, nil},
				{"empty path", side.res, "", codes.InvalidArgument, []string{"empty resource path"}},
				{"two segments", side.res, "kbs:///default/key", codes.InvalidArgument, []string{"kbs:///default/key"}},
				{"not a kbs URI", side.res, "https://kbs.example/default/key/1", codes.InvalidArgument, []string{"https://kbs.example/default/key/1"}},
				{"bad segment", side.res, "kbs:///default/key/a b", codes.InvalidArgument, nil},
				{"missing resource", side.res, "kbs:///default/key/missing", codes.NotFound,
					[]string{"kbs:///default/key/missing", "PluginInternalError", "resource not found"}},
				{"policy denies", side.res, "kbs:///default/secret/1", codes.PermissionDenied,
					[]string{"kbs:///default/secret/1", "HTTP 401 PolicyDeny", "Access denied by policy"}},
				{"KBS unreachable", downSide.res, "kbs:///default/key/1", codes.Unavailable,
					[]string{"kbs auth", "connection refused"}},
				{"no KBC", noneSide.res, "kbs:///default/key/1", codes.FailedPrecondition, []string{"no KBC"}},
			} {
				r, err := tc.c.GetResource(ctx, &cdhpb.GetResourceRequest{ResourcePath: tc.uri})
				if tc.code == codes.OK {
					if err != nil || string(r.GetResource()) != "k1" {
						t.Errorf("%s: %q, %v", tc.name, r.GetResource(), err)
					}
					continue
				}
				wantCode(t, tc.name, err, tc.code, append(tc.parts, "GetResource")...)
			}
		})
	}
}

// TestUnsealSecret unseals a vault secret sealed with sealed.Seal, its
// verification key and value in the KBS, on every transport.
func TestUnsealSecret(t *testing.T) {
	e := newKBSEnv(t, "")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwk, err := jose.JSONWebKey{Key: &key.PublicKey}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	e.put(t, "kbs:///default/sealed-key/1", jwk)
	e.put(t, "kbs:///default/secret/1", []byte("vault value\x00\xff"))
	seal := func(name string, k *ecdsa.PrivateKey) []byte {
		s, err := sealed.Seal(&sealed.Secret{Version: sealed.Version, Vault: &sealed.Vault{Provider: "kbs", Name: name}}, k, "kbs:///default/sealed-key/1")
		if err != nil {
			t.Fatal(err)
		}
		return []byte(s)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cdh := service.NewCDH(service.CDHConfig{KBC: e.client, Unsealer: &sealed.Unsealer{KBC: e.client, KeyDir: t.TempDir()}, Logger: testLogger(t)})

	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			_, side := tr.serve(t, nil, cdh, nil)
			out, err := side.sealed.UnsealSecret(ctx, &cdhpb.UnsealSecretInput{Secret: seal("kbs:///default/secret/1", key)})
			if err != nil || !bytes.Equal(out.GetPlaintext(), []byte("vault value\x00\xff")) {
				t.Fatalf("unseal: %q, %v", out.GetPlaintext(), err)
			}
			for _, tc := range []struct {
				name   string
				secret []byte
				code   codes.Code
				parts  []string
			}{
				{"empty", nil, codes.InvalidArgument, []string{"empty secret"}},
				{"not sealed", []byte("plain value"), codes.InvalidArgument, []string{"malformed sealed secret"}},
				{"signed by another key", seal("kbs:///default/secret/1", other), codes.PermissionDenied, []string{"does not verify"}},
				{"vault secret missing", seal("kbs:///default/secret/missing", key), codes.NotFound, []string{"kbs:///default/secret/missing"}},
				{"vault name not a URI", seal("kbs:///default/secret", key), codes.InvalidArgument, []string{"kbs:///default/secret"}},
			} {
				_, err := side.sealed.UnsealSecret(ctx, &cdhpb.UnsealSecretInput{Secret: tc.secret})
				wantCode(t, tc.name, err, tc.code, append(tc.parts, "UnsealSecret")...)
			}
		})
	}
	_, err = service.NewCDH(service.CDHConfig{}).UnsealSecret(context.Background(), &cdhpb.UnsealSecretInput{Secret: []byte("sealed.x.y.z")})
	wantCode(t, "no unsealer", err, codes.FailedPrecondition, "not configured")
}

// mounter records SecureMount calls.
type mounter struct {
	mu   sync.Mutex
	got  []string
	fail error
}

func (m *mounter) SecureMount(_ context.Context, volumeType string, options map[string]string, flags []string, mountPoint string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	opts, _ := json.Marshal(options)
	m.got = append(m.got, fmt.Sprintf("%s %s %s %s", volumeType, opts, strings.Join(flags, ","), mountPoint))
	return m.fail
}

// TestSecureMount: delegated with every field intact; Unimplemented with
// no mounter.
func TestSecureMount(t *testing.T) {
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			m := &mounter{}
			_, side := tr.serve(t, nil, service.NewCDH(service.CDHConfig{SecureMounter: m, Logger: testLogger(t)}), nil)
			req := &cdhpb.SecureMountRequest{VolumeType: "block-device",
				Options:    map[string]string{"deviceId": "7:0", "encryptionType": "luks2", "key": "kbs:///default/disk/key"},
				Flags:      []string{"ro", "nosuid"},
				MountPoint: "/run/secure/vol"}
			if _, err := side.mount.SecureMount(ctx, req); err != nil {
				t.Fatal(err)
			}
			want := `block-device {"deviceId":"7:0","encryptionType":"luks2","key":"kbs:///default/disk/key"} ro,nosuid /run/secure/vol`
			if len(m.got) != 1 || m.got[0] != want {
				t.Fatalf("mounter got %q, want %q", m.got, want)
			}
			bad := &cdhpb.SecureMountRequest{VolumeType: "block-device", MountPoint: "run/vol"}
			_, err := side.mount.SecureMount(ctx, bad)
			wantCode(t, "relative mount point", err, codes.InvalidArgument, "run/vol")
			m.fail = fmt.Errorf("open device 7:0: %w", fs.ErrNotExist)
			_, err = side.mount.SecureMount(ctx, req)
			wantCode(t, "mounter fails", err, codes.Internal, "open device 7:0")

			_, none := tr.serve(t, nil, service.NewCDH(service.CDHConfig{}), nil)
			_, err = none.mount.SecureMount(ctx, req)
			wantCode(t, "no mounter", err, codes.Unimplemented, "block-device", "no secure mounter")
		})
	}
}
