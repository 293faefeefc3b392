package service_test

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/api/keyproviderpb"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/teekey"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

// kbsEnv is a test KBS (sample TEE verifier, allow-all policy, admin key)
// and a KBS client attesting to it with the sample attester: the one client
// the services share.
type kbsEnv struct {
	kbs      *kbstest.Instance
	adminKey ed25519.PrivateKey
	client   *kbs.Client
}

func newKBSEnv(t *testing.T, alg teekey.Algorithm) *kbsEnv {
	t.Helper()
	pub, priv := kbstest.NewAdminKey(t)
	k := kbstest.Start(t, testkbs.Config{
		RepoDir:   t.TempDir(),
		Policy:    testkbs.AllowAll(),
		AdminKey:  pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()},
	})
	c, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), KeyAlgorithm: alg, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return &kbsEnv{kbs: k, adminKey: priv, client: c}
}

// put stores a resource through the KBS admin API.
func (e *kbsEnv) put(t *testing.T, uri string, data []byte) {
	t.Helper()
	e.kbs.SetResource(t, e.adminKey, uri, data)
}

// testLogger logs to the test's output.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// clients are the generated clients of one transport, with gRPC's call
// options stripped so that both transports share the ttRPC client
// interfaces.
type clients struct {
	aa     aapb.TTRPCAttestationAgentServiceService
	sealed cdhpb.TTRPCSealedSecretServiceService
	res    cdhpb.TTRPCGetResourceServiceService
	mount  cdhpb.TTRPCSecureMountServiceService
	pull   cdhpb.TTRPCImagePullServiceService
	kp     keyproviderpb.TTRPCKeyProviderServiceService
}

// transport serves the services as guestd lays them out (the AA on one
// socket; CDH and keyprovider on another) and returns clients of both.
type transport struct {
	name  string
	serve func(t *testing.T, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) (aaSide, cdhSide clients)
}

func transports() []transport {
	return []transport{
		{"ttrpc-unix", serveTTRPC},
		{"grpc-unix", func(t *testing.T, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) (clients, clients) {
			return serveGRPC(t, "unix", aa, nil, nil), serveGRPC(t, "unix", nil, cdh, kp)
		}},
		{"grpc-tcp", func(t *testing.T, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) (clients, clients) {
			return serveGRPC(t, "tcp", aa, nil, nil), serveGRPC(t, "tcp", nil, cdh, kp)
		}},
	}
}

// socketPath returns a unix socket path in a fresh temp dir, short enough
// for sun_path.
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "guestd-svc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

func serveTTRPC(t *testing.T, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) (clients, clients) {
	return serveTTRPCOne(t, aa, nil, nil), serveTTRPCOne(t, nil, cdh, kp)
}

func serveTTRPCOne(t *testing.T, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) clients {
	t.Helper()
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		t.Fatal(err)
	}
	service.RegisterTTRPC(srv, aa, cdh, kp)
	path := socketPath(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(context.Background(), l)
	}()
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() {
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("ttrpc shutdown: %v", err)
		}
		<-done
	})
	return clients{
		aa:     aapb.NewTTRPCAttestationAgentServiceClient(c),
		sealed: cdhpb.NewTTRPCSealedSecretServiceClient(c),
		res:    cdhpb.NewTTRPCGetResourceServiceClient(c),
		mount:  cdhpb.NewTTRPCSecureMountServiceClient(c),
		pull:   cdhpb.NewTTRPCImagePullServiceClient(c),
		kp:     keyproviderpb.NewTTRPCKeyProviderServiceClient(c),
	}
}

// serveGRPC serves on a unix socket or a loopback TCP port.
func serveGRPC(t *testing.T, network string, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) clients {
	t.Helper()
	srv := grpc.NewServer()
	service.RegisterGRPC(srv, aa, cdh, kp)
	var l net.Listener
	var target string
	var err error
	if network == "unix" {
		path := socketPath(t)
		l, err = net.Listen("unix", path)
		target = "unix://" + path
	} else {
		l, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			target = l.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return clients{
		aa:     grpcAA{aapb.NewAttestationAgentServiceClient(conn)},
		sealed: grpcSealed{cdhpb.NewSealedSecretServiceClient(conn)},
		res:    grpcResource{cdhpb.NewGetResourceServiceClient(conn)},
		mount:  grpcMount{cdhpb.NewSecureMountServiceClient(conn)},
		pull:   grpcPull{cdhpb.NewImagePullServiceClient(conn)},
		kp:     grpcKP{keyproviderpb.NewKeyProviderServiceClient(conn)},
	}
}

type grpcAA struct {
	c aapb.AttestationAgentServiceClient
}

func (g grpcAA) GetEvidence(ctx context.Context, r *aapb.GetEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	return g.c.GetEvidence(ctx, r)
}

func (g grpcAA) GetAdditionalEvidence(ctx context.Context, r *aapb.GetAdditionalEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	return g.c.GetAdditionalEvidence(ctx, r)
}

func (g grpcAA) GetToken(ctx context.Context, r *aapb.GetTokenRequest) (*aapb.GetTokenResponse, error) {
	return g.c.GetToken(ctx, r)
}

func (g grpcAA) ExtendRuntimeMeasurement(ctx context.Context, r *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	return g.c.ExtendRuntimeMeasurement(ctx, r)
}

func (g grpcAA) BindInitData(ctx context.Context, r *aapb.BindInitDataRequest) (*aapb.BindInitDataResponse, error) {
	return g.c.BindInitData(ctx, r)
}

func (g grpcAA) GetTeeType(ctx context.Context, r *aapb.GetTeeTypeRequest) (*aapb.GetTeeTypeResponse, error) {
	return g.c.GetTeeType(ctx, r)
}

func (g grpcAA) GetAdditionalTees(ctx context.Context, r *aapb.GetAdditionalTeesRequest) (*aapb.GetAdditionalTeesResponse, error) {
	return g.c.GetAdditionalTees(ctx, r)
}

type grpcSealed struct {
	c cdhpb.SealedSecretServiceClient
}

func (g grpcSealed) UnsealSecret(ctx context.Context, r *cdhpb.UnsealSecretInput) (*cdhpb.UnsealSecretOutput, error) {
	return g.c.UnsealSecret(ctx, r)
}

type grpcResource struct {
	c cdhpb.GetResourceServiceClient
}

func (g grpcResource) GetResource(ctx context.Context, r *cdhpb.GetResourceRequest) (*cdhpb.GetResourceResponse, error) {
	return g.c.GetResource(ctx, r)
}

type grpcMount struct {
	c cdhpb.SecureMountServiceClient
}

func (g grpcMount) SecureMount(ctx context.Context, r *cdhpb.SecureMountRequest) (*cdhpb.SecureMountResponse, error) {
	return g.c.SecureMount(ctx, r)
}

type grpcPull struct{ c cdhpb.ImagePullServiceClient }

func (g grpcPull) PullImage(ctx context.Context, r *cdhpb.ImagePullRequest) (*cdhpb.ImagePullResponse, error) {
	return g.c.PullImage(ctx, r)
}

type grpcKP struct {
	c keyproviderpb.KeyProviderServiceClient
}

func (g grpcKP) WrapKey(ctx context.Context, r *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	return g.c.WrapKey(ctx, r)
}

func (g grpcKP) UnWrapKey(ctx context.Context, r *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	return g.c.UnWrapKey(ctx, r)
}

// wantCode fails unless err is a status with code want whose message
// contains every string in parts and a request id.
func wantCode(t *testing.T, what string, err error, want codes.Code, parts ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: succeeded, want %v", what, want)
		return
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != want {
		t.Errorf("%s: %v, want code %v", what, err, want)
		return
	}
	for _, p := range append(parts, "[request ") {
		if !strings.Contains(st.Message(), p) {
			t.Errorf("%s: message %q does not contain %q", what, st.Message(), p)
		}
	}
}

// wantServerCode fails unless err has code want; for errors the RPC server
// makes itself (no service method ran, so there is no request id).
func wantServerCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s: %v, want code %v", what, err, want)
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
