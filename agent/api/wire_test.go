package api_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/api/keyproviderpb"
)

// recorder is a trivial implementation of every service: each method
// records a copy of its request and answers with the reply (or error) the
// test set for that method. One value serves both gRPC (through the
// embedded Unimplemented servers) and ttRPC (whose interfaces need only the
// methods). Method names are unique across the services.
type recorder struct {
	aapb.UnimplementedAttestationAgentServiceServer
	cdhpb.UnimplementedSealedSecretServiceServer
	cdhpb.UnimplementedGetResourceServiceServer
	cdhpb.UnimplementedSecureMountServiceServer
	cdhpb.UnimplementedImagePullServiceServer
	keyproviderpb.UnimplementedKeyProviderServiceServer

	mu    sync.Mutex
	got   map[string]proto.Message // method → last request
	reply map[string]proto.Message // method → reply
	err   map[string]error         // method → error instead of reply
}

func newRecorder() *recorder {
	return &recorder{got: map[string]proto.Message{}, reply: map[string]proto.Message{}, err: map[string]error{}}
}

func (r *recorder) set(method string, reply proto.Message, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.got, method)
	r.reply[method], r.err[method] = reply, err
}

func (r *recorder) request(method string) proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[method]
}

// answer records req for method and returns the reply set for it.
func answer[T proto.Message](r *recorder, method string, req proto.Message) (T, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[method] = proto.Clone(req)
	var zero T
	if err := r.err[method]; err != nil {
		return zero, err
	}
	reply, ok := r.reply[method]
	if !ok {
		return zero, status.Errorf(codes.Internal, "test set no reply for %s", method)
	}
	return proto.Clone(reply).(T), nil
}

func (r *recorder) GetEvidence(_ context.Context, req *aapb.GetEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	return answer[*aapb.GetEvidenceResponse](r, "GetEvidence", req)
}

func (r *recorder) GetAdditionalEvidence(_ context.Context, req *aapb.GetAdditionalEvidenceRequest) (*aapb.GetEvidenceResponse, error) {
	return answer[*aapb.GetEvidenceResponse](r, "GetAdditionalEvidence", req)
}

func (r *recorder) GetToken(_ context.Context, req *aapb.GetTokenRequest) (*aapb.GetTokenResponse, error) {
	return answer[*aapb.GetTokenResponse](r, "GetToken", req)
}

func (r *recorder) ExtendRuntimeMeasurement(_ context.Context, req *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	return answer[*aapb.ExtendRuntimeMeasurementResponse](r, "ExtendRuntimeMeasurement", req)
}

func (r *recorder) BindInitData(_ context.Context, req *aapb.BindInitDataRequest) (*aapb.BindInitDataResponse, error) {
	return answer[*aapb.BindInitDataResponse](r, "BindInitData", req)
}

func (r *recorder) GetTeeType(_ context.Context, req *aapb.GetTeeTypeRequest) (*aapb.GetTeeTypeResponse, error) {
	return answer[*aapb.GetTeeTypeResponse](r, "GetTeeType", req)
}

func (r *recorder) GetAdditionalTees(_ context.Context, req *aapb.GetAdditionalTeesRequest) (*aapb.GetAdditionalTeesResponse, error) {
	return answer[*aapb.GetAdditionalTeesResponse](r, "GetAdditionalTees", req)
}

func (r *recorder) UnsealSecret(_ context.Context, req *cdhpb.UnsealSecretInput) (*cdhpb.UnsealSecretOutput, error) {
	return answer[*cdhpb.UnsealSecretOutput](r, "UnsealSecret", req)
}

func (r *recorder) GetResource(_ context.Context, req *cdhpb.GetResourceRequest) (*cdhpb.GetResourceResponse, error) {
	return answer[*cdhpb.GetResourceResponse](r, "GetResource", req)
}

func (r *recorder) SecureMount(_ context.Context, req *cdhpb.SecureMountRequest) (*cdhpb.SecureMountResponse, error) {
	return answer[*cdhpb.SecureMountResponse](r, "SecureMount", req)
}

func (r *recorder) PullImage(_ context.Context, req *cdhpb.ImagePullRequest) (*cdhpb.ImagePullResponse, error) {
	return answer[*cdhpb.ImagePullResponse](r, "PullImage", req)
}

func (r *recorder) WrapKey(_ context.Context, req *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	return answer[*keyproviderpb.KeyProviderKeyWrapProtocolOutput](r, "WrapKey", req)
}

func (r *recorder) UnWrapKey(_ context.Context, req *keyproviderpb.KeyProviderKeyWrapProtocolInput) (*keyproviderpb.KeyProviderKeyWrapProtocolOutput, error) {
	return answer[*keyproviderpb.KeyProviderKeyWrapProtocolOutput](r, "UnWrapKey", req)
}

// call is one RPC of a wire test: method of service, sent req, and the
// reply or error the server gives.
type call struct {
	service protoreflect.FullName
	method  string
	req     proto.Message
	reply   proto.Message
	err     error
}

// socket groups the services that upstream serves on one socket, with the
// calls that exercise them.
type socket struct {
	name          string
	registerGRPC  func(*grpc.Server, *recorder)
	registerTTRPC func(*ttrpc.Server, *recorder)
	grpcClients   map[protoreflect.FullName]func(grpc.ClientConnInterface) any
	ttrpcClients  map[protoreflect.FullName]func(*ttrpc.Client) any
	calls         []call
}

const (
	aaService       = protoreflect.FullName("attestation_agent.AttestationAgentService")
	sealedService   = protoreflect.FullName("api.SealedSecretService")
	resourceService = protoreflect.FullName("api.GetResourceService")
	mountService    = protoreflect.FullName("api.SecureMountService")
	pullService     = protoreflect.FullName("api.ImagePullService")
	kpService       = protoreflect.FullName("keyprovider.KeyProviderService")
)

// evidence looks like real evidence: JSON with binary-looking content.
var evidence = []byte(`{"svn":"1","report_data":"AAECAwQ=","quote":"\u0000\u00ff"}` + "\x00\xff\xfe")

func sockets() []socket {
	return []socket{{
		name: "attestation-agent",
		registerGRPC: func(s *grpc.Server, r *recorder) {
			aapb.RegisterAttestationAgentServiceServer(s, r)
		},
		registerTTRPC: func(s *ttrpc.Server, r *recorder) {
			aapb.RegisterTTRPCAttestationAgentServiceService(s, r)
		},
		grpcClients: map[protoreflect.FullName]func(grpc.ClientConnInterface) any{
			aaService: func(c grpc.ClientConnInterface) any { return aapb.NewAttestationAgentServiceClient(c) },
		},
		ttrpcClients: map[protoreflect.FullName]func(*ttrpc.Client) any{
			aaService: func(c *ttrpc.Client) any { return aapb.NewTTRPCAttestationAgentServiceClient(c) },
		},
		calls: []call{
			{aaService, "GetEvidence",
				&aapb.GetEvidenceRequest{RuntimeData: []byte("nonce\x00\xff")},
				&aapb.GetEvidenceResponse{Evidence: evidence}, nil},
			{aaService, "GetAdditionalEvidence",
				&aapb.GetAdditionalEvidenceRequest{RuntimeData: []byte("n2")},
				&aapb.GetEvidenceResponse{Evidence: []byte(`{"nvgpu":[]}`)}, nil},
			{aaService, "GetToken",
				&aapb.GetTokenRequest{TokenType: "kbs"},
				&aapb.GetTokenResponse{Token: []byte(`{"token":"eyJ.x.y"}`)}, nil},
			// RegisterIndex is proto3 optional: 0 must arrive as set.
			{aaService, "ExtendRuntimeMeasurement",
				&aapb.ExtendRuntimeMeasurementRequest{Domain: "github.com/guestd", Operation: "pull-image", Content: "sha256:ab…", RegisterIndex: proto.Uint64(0)},
				&aapb.ExtendRuntimeMeasurementResponse{Result: aapb.RuntimeMeasurementResult_NOT_ENABLED}, nil},
			{aaService, "ExtendRuntimeMeasurement",
				&aapb.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c", RegisterIndex: proto.Uint64(17)},
				&aapb.ExtendRuntimeMeasurementResponse{Result: aapb.RuntimeMeasurementResult_NOT_SUPPORTED}, nil},
			{aaService, "ExtendRuntimeMeasurement",
				&aapb.ExtendRuntimeMeasurementRequest{Domain: "d", Operation: "o", Content: "c"},
				&aapb.ExtendRuntimeMeasurementResponse{Result: aapb.RuntimeMeasurementResult_OK}, nil},
			{aaService, "BindInitData",
				&aapb.BindInitDataRequest{Digest: make([]byte, 48)},
				&aapb.BindInitDataResponse{}, nil},
			{aaService, "BindInitData",
				&aapb.BindInitDataRequest{Digest: []byte{1, 2, 3}},
				nil, status.Error(codes.FailedPrecondition, "init-data digest does not match the launch measurement")},
			{aaService, "GetTeeType",
				&aapb.GetTeeTypeRequest{},
				&aapb.GetTeeTypeResponse{Tee: "snp"}, nil},
			{aaService, "GetAdditionalTees",
				&aapb.GetAdditionalTeesRequest{},
				&aapb.GetAdditionalTeesResponse{AdditionalTees: []string{"nvidia", "tpm"}}, nil},
		},
	}, {
		// Upstream serves the CDH services and the keyprovider on one socket.
		name: "confidential-data-hub",
		registerGRPC: func(s *grpc.Server, r *recorder) {
			cdhpb.RegisterSealedSecretServiceServer(s, r)
			cdhpb.RegisterGetResourceServiceServer(s, r)
			cdhpb.RegisterSecureMountServiceServer(s, r)
			cdhpb.RegisterImagePullServiceServer(s, r)
			keyproviderpb.RegisterKeyProviderServiceServer(s, r)
		},
		registerTTRPC: func(s *ttrpc.Server, r *recorder) {
			cdhpb.RegisterTTRPCSealedSecretServiceService(s, r)
			cdhpb.RegisterTTRPCGetResourceServiceService(s, r)
			cdhpb.RegisterTTRPCSecureMountServiceService(s, r)
			cdhpb.RegisterTTRPCImagePullServiceService(s, r)
			keyproviderpb.RegisterTTRPCKeyProviderServiceService(s, r)
		},
		grpcClients: map[protoreflect.FullName]func(grpc.ClientConnInterface) any{
			sealedService:   func(c grpc.ClientConnInterface) any { return cdhpb.NewSealedSecretServiceClient(c) },
			resourceService: func(c grpc.ClientConnInterface) any { return cdhpb.NewGetResourceServiceClient(c) },
			mountService:    func(c grpc.ClientConnInterface) any { return cdhpb.NewSecureMountServiceClient(c) },
			pullService:     func(c grpc.ClientConnInterface) any { return cdhpb.NewImagePullServiceClient(c) },
			kpService:       func(c grpc.ClientConnInterface) any { return keyproviderpb.NewKeyProviderServiceClient(c) },
		},
		ttrpcClients: map[protoreflect.FullName]func(*ttrpc.Client) any{
			sealedService:   func(c *ttrpc.Client) any { return cdhpb.NewTTRPCSealedSecretServiceClient(c) },
			resourceService: func(c *ttrpc.Client) any { return cdhpb.NewTTRPCGetResourceServiceClient(c) },
			mountService:    func(c *ttrpc.Client) any { return cdhpb.NewTTRPCSecureMountServiceClient(c) },
			pullService:     func(c *ttrpc.Client) any { return cdhpb.NewTTRPCImagePullServiceClient(c) },
			kpService:       func(c *ttrpc.Client) any { return keyproviderpb.NewTTRPCKeyProviderServiceClient(c) },
		},
		calls: []call{
			{sealedService, "UnsealSecret",
				&cdhpb.UnsealSecretInput{Secret: []byte("sealed.eyJhbGciOiJFUzI1NiJ9.eyJ2In0.c2ln")},
				&cdhpb.UnsealSecretOutput{Plaintext: []byte("s3cr3t\x00")}, nil},
			{resourceService, "GetResource",
				&cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/1"},
				&cdhpb.GetResourceResponse{Resource: []byte{0, 1, 2, 0xfe, 0xff}}, nil},
			{resourceService, "GetResource",
				&cdhpb.GetResourceRequest{ResourcePath: "kbs:///default/key/missing"},
				nil, status.Error(codes.NotFound, "resource kbs:///default/key/missing not found")},
			{mountService, "SecureMount",
				&cdhpb.SecureMountRequest{
					VolumeType: "BlockDevice",
					Options:    map[string]string{"deviceId": "7:0", "encryptType": "LUKS", "dataIntegrity": "false", "key": "kbs:///default/disk/key"},
					Flags:      []string{"ro", "nosuid"},
					MountPoint: "/run/secure/vol",
				},
				&cdhpb.SecureMountResponse{}, nil},
			{pullService, "PullImage",
				&cdhpb.ImagePullRequest{ImageUrl: "registry.example/app@sha256:" + sha, BundlePath: "/run/kata-containers/c1"},
				&cdhpb.ImagePullResponse{ManifestDigest: "sha256:" + sha}, nil},
			{kpService, "WrapKey",
				&keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte(`{"op":"keywrap","keywrapparams":{"optsdata":"e30="}}`)},
				&keyproviderpb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: []byte(`{"keywrapresults":{"annotation":"eyJraWQiOiIxIn0="}}`)}, nil},
			{kpService, "UnWrapKey",
				&keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte(`{"op":"keyunwrap","keyunwrapparams":{"annotation":"eyJraWQiOiIxIn0="}}`)},
				&keyproviderpb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: []byte(`{"keyunwrapresults":{"optsdata":"e30="}}`)}, nil},
		},
	}}
}

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// transport is one RPC stack: it serves r on a unix socket and returns the
// generated clients plus a raw invoker that names service and method
// explicitly (bypassing the generated client).
type transport struct {
	name  string
	serve func(t *testing.T, sock socket, r *recorder, path string) (clients map[protoreflect.FullName]any, invoke func(ctx context.Context, service protoreflect.FullName, method string, req, resp proto.Message) error)
}

var transports = []transport{
	{"ttrpc", serveTTRPC},
	{"grpc", serveGRPC},
}

func serveTTRPC(t *testing.T, sock socket, r *recorder, path string) (map[protoreflect.FullName]any, func(context.Context, protoreflect.FullName, string, proto.Message, proto.Message) error) {
	srv, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		t.Fatal(err)
	}
	sock.registerTTRPC(srv, r)
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
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("ttrpc shutdown: %v", err)
		}
		<-done
	})
	clients := map[protoreflect.FullName]any{}
	for name, mk := range sock.ttrpcClients {
		clients[name] = mk(c)
	}
	// ttRPC puts service and method in separate request fields.
	invoke := func(ctx context.Context, service protoreflect.FullName, method string, req, resp proto.Message) error {
		return c.Call(ctx, string(service), method, req, resp)
	}
	return clients, invoke
}

func serveGRPC(t *testing.T, sock socket, r *recorder, path string) (map[protoreflect.FullName]any, func(context.Context, protoreflect.FullName, string, proto.Message, proto.Message) error) {
	srv := grpc.NewServer()
	sock.registerGRPC(srv, r)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	clients := map[protoreflect.FullName]any{}
	for name, mk := range sock.grpcClients {
		clients[name] = mk(conn)
	}
	// gRPC puts "/<service>/<method>" in the :path header.
	invoke := func(ctx context.Context, service protoreflect.FullName, method string, req, resp proto.Message) error {
		return conn.Invoke(ctx, "/"+string(service)+"/"+method, req, resp)
	}
	return clients, invoke
}

// socketPath returns a short unix socket path (sun_path holds 108 bytes;
// t.TempDir's names grow with the subtest names).
func socketPath(t *testing.T) string {
	dir, err := os.MkdirTemp("", "guestd-api-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

// TestWireRoundTrip serves the trivial implementation over ttRPC and gRPC,
// calls every method of every service with the generated client and again
// with a raw call naming the upstream service and method, and checks that
// requests, replies and status errors arrive intact.
func TestWireRoundTrip(t *testing.T) {
	for _, sock := range sockets() {
		for _, tr := range transports {
			t.Run(sock.name+"/"+tr.name, func(t *testing.T) {
				r := newRecorder()
				clients, invoke := tr.serve(t, sock, r, socketPath(t))
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()

				covered := map[protoreflect.FullName]bool{}
				for _, c := range sock.calls {
					covered[c.service.Append(protoreflect.Name(c.method))] = true
					r.set(c.method, c.reply, c.err)

					client, ok := clients[c.service]
					if !ok {
						t.Fatalf("no %s client for %s", tr.name, c.service)
					}
					got, err := callMethod(ctx, client, c.method, c.req)
					check(t, "generated client "+c.method, c, r, got, err)

					// Raw call by upstream's names: what a client built
					// from upstream's .proto sends on the wire.
					r.set(c.method, c.reply, c.err)
					resp := newReply(t, c.service, c.method)
					err = invoke(ctx, c.service, c.method, c.req, resp)
					if err != nil {
						resp = nil
					}
					check(t, "raw "+string(c.service)+"/"+c.method, c, r, resp, err)
				}

				// Every method of every service on this socket was called.
				for name := range clients {
					sd := findService(t, name)
					for i := 0; i < sd.Methods().Len(); i++ {
						if m := sd.Methods().Get(i); !covered[m.FullName()] {
							t.Errorf("method %s not exercised", m.FullName())
						}
					}
				}
			})
		}
	}
}

// TestWireUnknownMethod checks that a method the server lacks fails with
// Unimplemented on both transports, the status upstream clients see from an
// older server.
func TestWireUnknownMethod(t *testing.T) {
	sock := sockets()[1]
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			_, invoke := tr.serve(t, sock, newRecorder(), socketPath(t))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := invoke(ctx, "api.SecureVolumeService", "ActivateVolume", &cdhpb.SecureMountRequest{}, &cdhpb.SecureMountResponse{})
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("unknown service: got %v, want code Unimplemented", err)
			}
			err = invoke(ctx, pullService, "PullImageV2", &cdhpb.ImagePullRequest{}, &cdhpb.ImagePullResponse{})
			if status.Code(err) != codes.Unimplemented {
				t.Errorf("unknown method: got %v, want code Unimplemented", err)
			}
		})
	}
}

// callMethod calls the generated client's method by name. gRPC clients take
// trailing variadic call options, which reflect's Call leaves empty.
func callMethod(ctx context.Context, client any, method string, req proto.Message) (proto.Message, error) {
	m := reflect.ValueOf(client).MethodByName(method)
	if !m.IsValid() {
		return nil, status.Errorf(codes.Internal, "client %T has no method %s", client, method)
	}
	out := m.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(req)})
	var err error
	if e := out[1].Interface(); e != nil {
		err = e.(error)
	}
	if out[0].IsNil() {
		return nil, err
	}
	return out[0].Interface().(proto.Message), err
}

func check(t *testing.T, what string, c call, r *recorder, got proto.Message, err error) {
	t.Helper()
	if c.err != nil {
		want := status.Convert(c.err)
		if s := status.Convert(err); err == nil || s.Code() != want.Code() || s.Message() != want.Message() {
			t.Errorf("%s: error = %v, want %v", what, err, c.err)
		}
	} else {
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if !proto.Equal(got, c.reply) {
			t.Errorf("%s: reply = %v, want %v", what, got, c.reply)
		}
	}
	if req := r.request(c.method); !proto.Equal(req, c.req) {
		t.Errorf("%s: server got %v, want %v", what, req, c.req)
	}
	// Presence of the proto3 optional field survives the wire.
	if want, ok := c.req.(*aapb.ExtendRuntimeMeasurementRequest); ok {
		if req, _ := r.request(c.method).(*aapb.ExtendRuntimeMeasurementRequest); req == nil || (req.RegisterIndex == nil) != (want.RegisterIndex == nil) {
			t.Errorf("%s: RegisterIndex presence lost: got %v, want %v", what, req, want)
		}
	}
}

// newReply makes an empty reply message for method from the service
// descriptor.
func newReply(t *testing.T, service protoreflect.FullName, method string) proto.Message {
	t.Helper()
	md := findService(t, service).Methods().ByName(protoreflect.Name(method))
	if md == nil {
		t.Fatalf("%s has no method %s", service, method)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
	if err != nil {
		t.Fatal(err)
	}
	return mt.New().Interface()
}

func findService(t *testing.T, name protoreflect.FullName) protoreflect.ServiceDescriptor {
	t.Helper()
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(name)
	if err != nil {
		t.Fatalf("service %s: %v", name, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		t.Fatalf("%s is a %T, not a service", name, d)
	}
	return sd
}
