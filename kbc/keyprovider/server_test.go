package keyprovider_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/ocicrypt/config"
	kpconfig "github.com/containers/ocicrypt/config/keyprovider-config"
	ocikp "github.com/containers/ocicrypt/keywrap/keyprovider"
	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/attester/sample"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/kbc/resource"
	testkbs "github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/kbstest"
	samplev "github.com/guestd/guestd/test/kbs/verifier/sample"
)

var _ keyprovider.Registrar = (*kbs.Admin)(nil)

// serve runs srv on a fresh unix socket and returns its path.
func serve(t *testing.T, srv *keyprovider.Server) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "kp") // short: sun_path is 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "kp.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterKeyProviderServiceServer(g, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	t.Cleanup(func() { g.Stop(); <-done })
	return sock
}

// recRegistrar records registrations; it fails when fail is set.
type recRegistrar struct {
	mu    sync.Mutex
	keks  map[string][]byte
	calls int
	fail  error
}

func (r *recRegistrar) SetResource(_ context.Context, uri resource.URI, data []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if r.fail != nil {
		return r.fail
	}
	if r.keks == nil {
		r.keks = map[string][]byte{}
	}
	r.keks[uri.String()] = append([]byte(nil), data...)
	return nil
}

// ocicryptClient is ocicrypt's own keyprovider client for the socket.
func ocicryptClient(sock string) interface {
	WrapKeys(*config.EncryptConfig, []byte) ([]byte, error)
	UnwrapKey(*config.DecryptConfig, []byte) ([]byte, error)
} {
	return ocikp.NewKeyWrapper("attestation-agent", kpconfig.KeyProviderAttrs{Grpc: "unix://" + sock})
}

// encryptConfig is what skopeo builds for --encryption-key provider:<spec>.
func encryptConfig(t *testing.T, spec string) *config.EncryptConfig {
	t.Helper()
	cc, err := config.EncryptWithKeyProvider([][]byte{[]byte(spec)})
	if err != nil {
		t.Fatal(err)
	}
	return cc.EncryptConfig
}

func decryptConfig(t *testing.T) *config.DecryptConfig {
	t.Helper()
	cc, err := config.DecryptWithKeyProvider([][]byte{[]byte("attestation-agent")})
	if err != nil {
		t.Fatal(err)
	}
	return cc.DecryptConfig
}

// TestServerKBSRoundTrip: ocicrypt's client wraps through the server, which
// registers the KEK in a test KBS with the admin API; ocicrypt's client
// then unwraps through the server, whose Unwrapper attests to the KBS and
// fetches the KEK.
func TestServerKBSRoundTrip(t *testing.T) {
	pub, priv := kbstest.NewAdminKey(t)
	repo := t.TempDir()
	k := kbstest.Start(t, testkbs.Config{RepoDir: repo, Policy: testkbs.AllowAll(), AdminKey: pub,
		Verifiers: map[string]testkbs.Verifier{"sample": samplev.New()}})
	admin, err := kbs.NewAdmin(k.URL, priv, nil)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kbs.New(kbs.Config{URL: k.URL, Attester: sample.New(), Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	sock := serve(t, keyprovider.NewServer(keyprovider.ServerConfig{
		Unwrapper: &keyprovider.Unwrapper{KBC: client},
		Registrar: admin,
	}))
	c := ocicryptClient(sock)
	opts := []byte(`{"symkey":"1jL2jJV0Oyz2nmPkLtqulW6cKcpIUN5FpILcVnP5Uqs=","digest":"","cipheroptions":{"nonce":"r10F9oaCu+nWFXfod3l83g=="}}`)

	for _, tc := range []struct {
		spec, kid, alg string
	}{
		{"attestation-agent:keyid=kbs:///default/key/rt1::algorithm=A256GCM", "kbs:///default/key/rt1", "A256GCM"},
		{"attestation-agent:keyid=kbs:///default/key/rt2::algorithm=A256CTR", "kbs:///default/key/rt2", "A256CTR"},
		{"attestation-agent", `^kbs:///default/image-kek/[0-9a-f-]{36}$`, "A256GCM"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			ann, err := c.WrapKeys(encryptConfig(t, tc.spec), opts)
			if err != nil {
				t.Fatal(err)
			}
			p, err := keyprovider.ParsePacket(ann)
			if err != nil {
				t.Fatalf("packet %q: %v", ann, err)
			}
			if !regexp.MustCompile(tc.kid).MatchString(p.KID) || p.WrapType != tc.alg {
				t.Errorf("packet %s", ann)
			}
			// The KEK is in the KBS's repository, and it unwraps the packet.
			uri, err := resource.Parse(p.KID)
			if err != nil {
				t.Fatal(err)
			}
			kek, err := os.ReadFile(filepath.Join(append([]string{repo}, uri.Segments...)...))
			if err != nil || len(kek) != 32 {
				t.Fatalf("registered KEK: %d bytes, %v", len(kek), err)
			}
			local := &keyprovider.Unwrapper{KBC: newMapKBC(map[string][]byte{p.KID: kek})}
			if got, err := local.Unwrap(context.Background(), ann); err != nil || !bytes.Equal(got, opts) {
				t.Fatalf("the registered KEK does not unwrap the packet: %q, %v", got, err)
			}
			got, err := c.UnwrapKey(decryptConfig(t), ann)
			if err != nil {
				t.Fatalf("unwrap: %v", err)
			}
			if !bytes.Equal(got, opts) {
				t.Errorf("unwrapped %q", got)
			}
		})
	}
	if st := k.Server.Stats(); st.AdminWrites != 3 {
		t.Errorf("KBS admin writes %d, want 3", st.AdminWrites)
	}
	if st := client.Stats(); st.Attestations != 1 || st.Fetches != 3 {
		t.Errorf("KBS client stats %+v", st)
	}
}

// rawCall sends a hand-written protocol input with a plain gRPC client.
func rawCall(t *testing.T, sock, method string, input []byte) ([]byte, error) {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewKeyProviderServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req := &pb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: input}
	var out *pb.KeyProviderKeyWrapProtocolOutput
	if method == "wrap" {
		out, err = c.WrapKey(ctx, req)
	} else {
		out, err = c.UnWrapKey(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	return out.GetKeyProviderKeyWrapProtocolOutput(), nil
}

func byteArray(b []byte) string {
	parts := make([]string, len(b))
	for i, c := range b {
		parts[i] = fmt.Sprint(c)
	}
	return "[" + strings.Join(parts, ",") + "]"
}

// TestServerJSONForms: the JSON the server accepts and writes, byte for
// byte: parameters as plain strings or base64, optsdata and annotation as
// base64 or number arrays (Rust serde), output as base64 only.
func TestServerJSONForms(t *testing.T) {
	reg := &recRegistrar{}
	kbc := newMapKBC(map[string][]byte{})
	sock := serve(t, keyprovider.NewServer(keyprovider.ServerConfig{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}, Registrar: reg}))
	opts := []byte(`{"symkey":"AAAA","cipheroptions":{}}`)

	for _, tc := range []struct{ name, input string }{
		{"plain string parameter, number-array optsdata",
			`{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["keyid=kbs:///default/key/plain"]},"DecryptConfig":{"Parameters":{}}},"optsdata":` + byteArray(opts) + `},"keyunwrapparams":{}}`},
		{"base64 parameter and optsdata (Go ocicrypt)",
			`{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["` + base64Std([]byte("keyid=kbs:///default/key/b64")) + `"]},"DecryptConfig":{"Parameters":null}},"optsdata":"` + base64Std(opts) + `"},"keyunwrapparams":{"dc":null,"annotation":null}}`},
		{"number-array parameter, no op",
			`{"keywrapparams":{"ec":{"Parameters":{"attestation-agent":[` + byteArray([]byte("keyid=kbs:///default/key/arr")) + `]}},"optsdata":"` + base64Std(opts) + `"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := rawCall(t, sock, "wrap", []byte(tc.input))
			if err != nil {
				t.Fatal(err)
			}
			m := regexp.MustCompile(`^\{"keywrapresults":\{"annotation":"([A-Za-z0-9+/=]+)"\}\}$`).FindSubmatch(out)
			if m == nil {
				t.Fatalf("output %s", out)
			}
			ann := b64(t, string(m[1]))
			p, err := keyprovider.ParsePacket(ann)
			if err != nil {
				t.Fatal(err)
			}
			reg.mu.Lock()
			kbc.res[p.KID] = reg.keks[p.KID]
			reg.mu.Unlock()

			// Unwrap with the annotation as base64 and as a number array.
			for _, annJSON := range []string{`"` + base64Std(ann) + `"`, byteArray(ann)} {
				out, err := rawCall(t, sock, "unwrap", []byte(`{"op":"keyunwrap","keywrapparams":{},"keyunwrapparams":{"dc":{"Parameters":{"attestation-agent":["RW5hYmxlZA=="]}},"annotation":`+annJSON+`}}`))
				if err != nil {
					t.Fatal(err)
				}
				if want := `{"keyunwrapresults":{"optsdata":"` + base64Std(opts) + `"}}`; string(out) != want {
					t.Errorf("output %s\nwant   %s", out, want)
				}
			}
		})
	}
	if len(reg.keks) != 3 {
		t.Errorf("registered %d KEKs", len(reg.keks))
	}
}

// TestServerKeyPath: with keypath the server wraps under that file's KEK
// and registers that KEK.
func TestServerKeyPath(t *testing.T) {
	dir := t.TempDir()
	kek := bytes.Repeat([]byte{0x5a}, 32) // test key
	good := filepath.Join(dir, "kek")
	if err := os.WriteFile(good, kek, 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, kek[:31], 0o600); err != nil {
		t.Fatal(err)
	}
	reg := &recRegistrar{}
	sock := serve(t, keyprovider.NewServer(keyprovider.ServerConfig{Registrar: reg}))
	c := ocicryptClient(sock)
	opts := []byte(`{"symkey":"AAAA"}`)
	ann, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keypath="+good+"::keyid=/default/key/file"), opts)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := keyprovider.ParsePacket(ann)
	if p.KID != "kbs:///default/key/file" {
		t.Errorf("kid %q", p.KID)
	}
	got, err := (&keyprovider.Wrapper{KEK: kek}).UnwrapKey(nil, ann)
	if err != nil || !bytes.Equal(got, opts) {
		t.Errorf("the file's KEK does not unwrap: %q, %v", got, err)
	}
	if !bytes.Equal(reg.keks["kbs:///default/key/file"], kek) {
		t.Error("the file's KEK was not registered")
	}
	for _, path := range []string{short, dir, filepath.Join(dir, "absent")} {
		if _, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keypath="+path+"::keyid=kbs:///a/b/c"), opts); err == nil {
			t.Errorf("keypath %s accepted", path)
		}
	}
	// Without an Unwrapper, UnWrapKey is unimplemented, as upstream.
	_, err = c.UnwrapKey(decryptConfig(t), ann)
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("UnwrapKey without an Unwrapper: %v", err)
	}
}

func TestServerErrors(t *testing.T) {
	kek := bytes.Repeat([]byte{3}, 32)
	kbc := newMapKBC(map[string][]byte{"kbs:///default/key/wrong": bytes.Repeat([]byte{4}, 32)})
	good, err := (&keyprovider.Wrapper{KEK: kek, KID: "kbs:///default/key/wrong"}).Wrap([]byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	refusing := &recRegistrar{fail: errors.New("HTTP 401 AdminAuthInitialization: token does not verify")}
	okSock := serve(t, keyprovider.NewServer(keyprovider.ServerConfig{Unwrapper: &keyprovider.Unwrapper{KBC: kbc}}))
	refSock := serve(t, keyprovider.NewServer(keyprovider.ServerConfig{Registrar: refusing}))
	wrapIn := func(param string) string {
		return `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["` + param + `"]}},"optsdata":"e30="}}`
	}
	for _, tc := range []struct {
		name, sock, method, input string
		code                      codes.Code
		match                     string
	}{
		{"not JSON", okSock, "wrap", `{`, codes.InvalidArgument, "malformed protocol input"},
		{"wrong op", okSock, "wrap", `{"op":"keyunwrap"}`, codes.InvalidArgument, `input op is "keyunwrap"`},
		{"no ec", okSock, "wrap", `{"op":"keywrap","keywrapparams":{"optsdata":"e30="}}`, codes.InvalidArgument, "no ec"},
		{"no optsdata", okSock, "wrap", `{"op":"keywrap","keywrapparams":{"ec":{"Parameters":{"attestation-agent":["keyid=kbs:///a/b/c"]}}}}`, codes.InvalidArgument, "no optsdata"},
		{"no attestation-agent parameter", okSock, "wrap", `{"keywrapparams":{"ec":{"Parameters":{"pubkeys":["AA=="]}},"optsdata":"e30="}}`, codes.InvalidArgument, `0 "attestation-agent" parameters`},
		{"sample", okSock, "wrap", wrapIn("sample=true"), codes.InvalidArgument, "sample=true is refused"},
		{"unknown parameter", okSock, "wrap", wrapIn("keyid=kbs:///a/b/c::colour=red"), codes.InvalidArgument, `unknown parameter "colour"`},
		{"bad keyid", okSock, "wrap", wrapIn("keyid=kbs:///a/b"), codes.InvalidArgument, "keyid: resource URI"},
		{"bad algorithm", okSock, "wrap", wrapIn("algorithm=A128GCM"), codes.InvalidArgument, `wrap type "A128GCM"`},
		{"registration refused", refSock, "wrap", wrapIn("keyid=kbs:///default/key/x"), codes.Unavailable,
			"register KEK kbs:///default/key/x: HTTP 401 AdminAuthInitialization"},
		{"no annotation", okSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{}}`, codes.InvalidArgument, "no annotation"},
		{"garbage annotation", okSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"` + base64Std([]byte("garbage")) + `"}}`, codes.InvalidArgument, "malformed annotation packet"},
		{"wrong KEK", okSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"` + base64Std(good) + `"}}`, codes.PermissionDenied, `kid "kbs:///default/key/wrong".*authentication failed`},
		{"missing KEK", okSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"` + base64Std(bytes.Replace(good, []byte("wrong"), []byte("absent"), 1)) + `"}}`, codes.Unavailable, "fetch KEK: get kbs:///default/key/absent: resource not found"},
		{"unknown provider", okSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"` + base64Std([]byte(`{"version":"0.1.0","provider":"aws","kid":"k","wrapped_data":"AA=="}`)) + `"}}`, codes.InvalidArgument, `KEK provider "aws"`},
		{"unwrap unimplemented", refSock, "unwrap", `{"op":"keyunwrap","keyunwrapparams":{"annotation":"` + base64Std(good) + `"}}`, codes.Unimplemented, "no KBC"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := rawCall(t, tc.sock, tc.method, []byte(tc.input))
			if err == nil {
				t.Fatalf("succeeded: %s", out)
			}
			st, _ := status.FromError(err)
			if st.Code() != tc.code || !regexp.MustCompile(tc.match).MatchString(st.Message()) {
				t.Errorf("got %v %q, want %v matching %q", st.Code(), st.Message(), tc.code, tc.match)
			}
		})
	}
	if !kbc.allZeroed() {
		t.Error("KEK not zeroed")
	}
}

// TestServerOneKEKPerKid: ocicrypt calls WrapKey once per layer; every
// layer under one kid must be wrapped under the one KEK the KBS holds,
// also when the layers are wrapped concurrently.
func TestServerOneKEKPerKid(t *testing.T) {
	reg := &recRegistrar{}
	srv := keyprovider.NewServer(keyprovider.ServerConfig{Registrar: reg})
	c := ocicryptClient(serve(t, srv))
	opts := []byte(`{"symkey":"AAAA"}`)
	const layers = 8
	anns := make([][]byte, layers)
	var wg sync.WaitGroup
	for i := range layers {
		wg.Go(func() {
			ann, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keyid=kbs:///default/key/shared"), opts)
			if err != nil {
				t.Error(err)
			}
			anns[i] = ann
		})
	}
	wg.Wait()
	if reg.calls != 1 {
		t.Fatalf("%d registrations, want 1", reg.calls)
	}
	u := &keyprovider.Unwrapper{KBC: newMapKBC(map[string][]byte{"kbs:///default/key/shared": reg.keks["kbs:///default/key/shared"]})}
	for i, ann := range anns {
		if got, err := u.Unwrap(context.Background(), ann); err != nil || !bytes.Equal(got, opts) {
			t.Errorf("layer %d does not unwrap under the registered KEK: %v", i, err)
		}
	}
	// Another kid gets another KEK.
	if _, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keyid=kbs:///default/key/other"), opts); err != nil {
		t.Fatal(err)
	}
	if reg.calls != 2 || bytes.Equal(reg.keks["kbs:///default/key/other"], reg.keks["kbs:///default/key/shared"]) {
		t.Errorf("second kid: %d registrations", reg.calls)
	}
	// A keypath KEK for the kid replaces the random one, here and in the KBS.
	file := filepath.Join(t.TempDir(), "kek")
	if err := os.WriteFile(file, bytes.Repeat([]byte{9}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keyid=kbs:///default/key/shared::keypath="+file), opts); err != nil {
		t.Fatal(err)
	}
	ann, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keyid=kbs:///default/key/shared"), opts)
	if err != nil {
		t.Fatal(err)
	}
	if reg.calls != 4 {
		t.Errorf("%d registrations, want 4", reg.calls)
	}
	u = &keyprovider.Unwrapper{KBC: newMapKBC(map[string][]byte{"kbs:///default/key/shared": reg.keks["kbs:///default/key/shared"]})}
	if _, err := u.Unwrap(context.Background(), ann); err != nil {
		t.Errorf("after keypath: %v", err)
	}
	// After Close the server draws (and registers) a new KEK.
	srv.Close()
	if _, err := c.WrapKeys(encryptConfig(t, "attestation-agent:keyid=kbs:///default/key/other"), opts); err != nil {
		t.Fatal(err)
	}
	if reg.calls != 5 {
		t.Errorf("%d registrations after Close, want 5", reg.calls)
	}
}
