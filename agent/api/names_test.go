package api_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	ocikpwrap "github.com/containers/ocicrypt/keywrap/keyprovider"
	ocikp "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/api/keyproviderpb"
)

// ocicrypt's key-wrapping client is linked into this test binary alongside
// keyproviderpb, as in guestd: if keyproviderpb registered its own
// descriptor for package keyprovider, the binary would panic before any
// test ran.
var _ = ocikpwrap.NewKeyWrapper

// wantMethods lists every RPC guestd serves, as upstream clients address it:
// /<package>.<Service>/<Method>, with its request and response messages.
var wantMethods = []struct{ path, in, out string }{
	{"/attestation_agent.AttestationAgentService/GetEvidence", "attestation_agent.GetEvidenceRequest", "attestation_agent.GetEvidenceResponse"},
	{"/attestation_agent.AttestationAgentService/GetAdditionalEvidence", "attestation_agent.GetAdditionalEvidenceRequest", "attestation_agent.GetEvidenceResponse"},
	{"/attestation_agent.AttestationAgentService/GetToken", "attestation_agent.GetTokenRequest", "attestation_agent.GetTokenResponse"},
	{"/attestation_agent.AttestationAgentService/ExtendRuntimeMeasurement", "attestation_agent.ExtendRuntimeMeasurementRequest", "attestation_agent.ExtendRuntimeMeasurementResponse"},
	{"/attestation_agent.AttestationAgentService/BindInitData", "attestation_agent.BindInitDataRequest", "attestation_agent.BindInitDataResponse"},
	{"/attestation_agent.AttestationAgentService/GetTeeType", "attestation_agent.GetTeeTypeRequest", "attestation_agent.GetTeeTypeResponse"},
	{"/attestation_agent.AttestationAgentService/GetAdditionalTees", "attestation_agent.GetAdditionalTeesRequest", "attestation_agent.GetAdditionalTeesResponse"},
	{"/api.SealedSecretService/UnsealSecret", "api.UnsealSecretInput", "api.UnsealSecretOutput"},
	{"/api.GetResourceService/GetResource", "api.GetResourceRequest", "api.GetResourceResponse"},
	{"/api.SecureMountService/SecureMount", "api.SecureMountRequest", "api.SecureMountResponse"},
	{"/api.ImagePullService/PullImage", "api.ImagePullRequest", "api.ImagePullResponse"},
	// ocicrypt spells the messages keyProvider… where CoCo has
	// KeyProvider…; message names never reach the wire.
	{"/keyprovider.KeyProviderService/WrapKey", "keyprovider.keyProviderKeyWrapProtocolInput", "keyprovider.keyProviderKeyWrapProtocolOutput"},
	{"/keyprovider.KeyProviderService/UnWrapKey", "keyprovider.keyProviderKeyWrapProtocolInput", "keyprovider.keyProviderKeyWrapProtocolOutput"},
}

// files are the descriptors the generated packages register: guestd's own
// for AA and CDH, ocicrypt's for the keyprovider.
var files = []protoreflect.FileDescriptor{
	aapb.File_agent_api_proto_attestation_agent_proto,
	cdhpb.File_agent_api_proto_confidential_data_hub_proto,
	(&keyproviderpb.KeyProviderKeyWrapProtocolInput{}).ProtoReflect().Descriptor().ParentFile(),
}

func TestMethodNames(t *testing.T) {
	var got, want []string
	for _, fd := range files {
		for i := 0; i < fd.Services().Len(); i++ {
			sd := fd.Services().Get(i)
			for j := 0; j < sd.Methods().Len(); j++ {
				md := sd.Methods().Get(j)
				if md.IsStreamingClient() || md.IsStreamingServer() {
					t.Errorf("%s streams; upstream's methods are all unary", md.FullName())
				}
				got = append(got, fmt.Sprintf("/%s/%s %s→%s", sd.FullName(), md.Name(), md.Input().FullName(), md.Output().FullName()))
			}
		}
	}
	for _, m := range wantMethods {
		want = append(want, fmt.Sprintf("%s %s→%s", m.path, m.in, m.out))
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("methods in the generated descriptors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestGRPCMethodNames checks the names the gRPC stubs put on the wire.
func TestGRPCMethodNames(t *testing.T) {
	var got []string
	for _, sd := range []*grpc.ServiceDesc{
		&aapb.AttestationAgentService_ServiceDesc,
		&cdhpb.SealedSecretService_ServiceDesc,
		&cdhpb.GetResourceService_ServiceDesc,
		&cdhpb.SecureMountService_ServiceDesc,
		&cdhpb.ImagePullService_ServiceDesc,
		&ocikp.KeyProviderService_ServiceDesc,
	} {
		if len(sd.Streams) != 0 {
			t.Errorf("%s has streams", sd.ServiceName)
		}
		for _, m := range sd.Methods {
			got = append(got, "/"+sd.ServiceName+"/"+m.MethodName)
		}
	}
	var want []string
	for _, m := range wantMethods {
		want = append(want, m.path)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("gRPC methods:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, c := range []struct{ got, want string }{
		{aapb.AttestationAgentService_GetEvidence_FullMethodName, "/attestation_agent.AttestationAgentService/GetEvidence"},
		{cdhpb.ImagePullService_PullImage_FullMethodName, "/api.ImagePullService/PullImage"},
		{keyproviderpb.KeyProviderService_UnWrapKey_FullMethodName, "/keyprovider.KeyProviderService/UnWrapKey"},
	} {
		if c.got != c.want {
			t.Errorf("FullMethodName = %q, want %q", c.got, c.want)
		}
	}
}

// field is the expected wire shape of one field, in .proto notation.
type field struct {
	name   string
	number protoreflect.FieldNumber
	typ    string
}

// wantMessages are coco-apis.md's messages: every field's name, number and
// type. Messages absent from a file's list, or extra fields, fail the test.
var wantMessages = []struct {
	msg    proto.Message
	name   string
	fields []field
}{
	{&aapb.GetEvidenceRequest{}, "attestation_agent.GetEvidenceRequest", []field{{"RuntimeData", 1, "bytes"}}},
	{&aapb.GetAdditionalEvidenceRequest{}, "attestation_agent.GetAdditionalEvidenceRequest", []field{{"RuntimeData", 1, "bytes"}}},
	{&aapb.GetEvidenceResponse{}, "attestation_agent.GetEvidenceResponse", []field{{"Evidence", 1, "bytes"}}},
	{&aapb.GetTokenRequest{}, "attestation_agent.GetTokenRequest", []field{{"TokenType", 1, "string"}}},
	{&aapb.GetTokenResponse{}, "attestation_agent.GetTokenResponse", []field{{"Token", 1, "bytes"}}},
	{&aapb.ExtendRuntimeMeasurementRequest{}, "attestation_agent.ExtendRuntimeMeasurementRequest", []field{
		{"Domain", 1, "string"}, {"Operation", 2, "string"}, {"Content", 3, "string"}, {"RegisterIndex", 4, "optional uint64"},
	}},
	{&aapb.ExtendRuntimeMeasurementResponse{}, "attestation_agent.ExtendRuntimeMeasurementResponse", []field{
		{"Result", 1, "attestation_agent.RuntimeMeasurementResult"},
	}},
	{&aapb.BindInitDataRequest{}, "attestation_agent.BindInitDataRequest", []field{{"Digest", 1, "bytes"}}},
	{&aapb.BindInitDataResponse{}, "attestation_agent.BindInitDataResponse", nil},
	{&aapb.GetTeeTypeRequest{}, "attestation_agent.GetTeeTypeRequest", nil},
	{&aapb.GetTeeTypeResponse{}, "attestation_agent.GetTeeTypeResponse", []field{{"tee", 1, "string"}}},
	{&aapb.GetAdditionalTeesRequest{}, "attestation_agent.GetAdditionalTeesRequest", nil},
	{&aapb.GetAdditionalTeesResponse{}, "attestation_agent.GetAdditionalTeesResponse", []field{{"additional_tees", 1, "repeated string"}}},

	{&cdhpb.UnsealSecretInput{}, "api.UnsealSecretInput", []field{{"secret", 1, "bytes"}}},
	{&cdhpb.UnsealSecretOutput{}, "api.UnsealSecretOutput", []field{{"plaintext", 1, "bytes"}}},
	{&cdhpb.GetResourceRequest{}, "api.GetResourceRequest", []field{{"ResourcePath", 1, "string"}}},
	{&cdhpb.GetResourceResponse{}, "api.GetResourceResponse", []field{{"Resource", 1, "bytes"}}},
	{&cdhpb.SecureMountRequest{}, "api.SecureMountRequest", []field{
		{"volume_type", 1, "string"}, {"options", 2, "map<string, string>"}, {"flags", 3, "repeated string"}, {"mount_point", 4, "string"},
	}},
	{&cdhpb.SecureMountResponse{}, "api.SecureMountResponse", nil},
	{&cdhpb.ImagePullRequest{}, "api.ImagePullRequest", []field{{"image_url", 1, "string"}, {"bundle_path", 2, "string"}}},
	{&cdhpb.ImagePullResponse{}, "api.ImagePullResponse", []field{{"manifest_digest", 1, "string"}}},

	{&keyproviderpb.KeyProviderKeyWrapProtocolInput{}, "keyprovider.keyProviderKeyWrapProtocolInput", []field{{"KeyProviderKeyWrapProtocolInput", 1, "bytes"}}},
	{&keyproviderpb.KeyProviderKeyWrapProtocolOutput{}, "keyprovider.keyProviderKeyWrapProtocolOutput", []field{{"KeyProviderKeyWrapProtocolOutput", 1, "bytes"}}},
}

func TestFieldNumbers(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	for _, m := range wantMessages {
		md := m.msg.ProtoReflect().Descriptor()
		seen[md.FullName()] = true
		t.Run(m.name, func(t *testing.T) {
			if string(md.FullName()) != m.name {
				t.Errorf("message name %s, want %s", md.FullName(), m.name)
			}
			if md.Fields().Len() != len(m.fields) {
				t.Errorf("%d fields, want %d", md.Fields().Len(), len(m.fields))
			}
			for _, f := range m.fields {
				fd := md.Fields().ByName(protoreflect.Name(f.name))
				if fd == nil {
					t.Errorf("no field %s", f.name)
					continue
				}
				if fd.Number() != f.number {
					t.Errorf("%s = %d, want %d", f.name, fd.Number(), f.number)
				}
				if got := fieldType(fd); got != f.typ {
					t.Errorf("%s is %q, want %q", f.name, got, f.typ)
				}
			}
		})
	}
	// No message in the generated files escapes the table.
	for _, fd := range files {
		for i := 0; i < fd.Messages().Len(); i++ {
			if n := fd.Messages().Get(i).FullName(); !seen[n] {
				t.Errorf("message %s is not in the table", n)
			}
		}
	}
}

// fieldType renders a field's wire type in .proto notation.
func fieldType(fd protoreflect.FieldDescriptor) string {
	if fd.IsMap() {
		return fmt.Sprintf("map<%s, %s>", fieldType(fd.MapKey()), fieldType(fd.MapValue()))
	}
	var typ string
	switch fd.Kind() {
	case protoreflect.EnumKind:
		typ = string(fd.Enum().FullName())
	case protoreflect.MessageKind, protoreflect.GroupKind:
		typ = string(fd.Message().FullName())
	default:
		typ = fd.Kind().String()
	}
	switch {
	case fd.IsList():
		return "repeated " + typ
	case fd.HasOptionalKeyword():
		return "optional " + typ
	}
	return typ
}

func TestRuntimeMeasurementResultValues(t *testing.T) {
	ed := aapb.RuntimeMeasurementResult_OK.Descriptor()
	if ed.FullName() != "attestation_agent.RuntimeMeasurementResult" {
		t.Errorf("enum name %s", ed.FullName())
	}
	want := []struct {
		name   protoreflect.Name
		number protoreflect.EnumNumber
	}{{"OK", 0}, {"NOT_SUPPORTED", 1}, {"NOT_ENABLED", 2}}
	if ed.Values().Len() != len(want) {
		t.Errorf("%d values, want %d", ed.Values().Len(), len(want))
	}
	for _, w := range want {
		v := ed.Values().ByName(w.name)
		if v == nil || v.Number() != w.number {
			t.Errorf("%s: got %v, want %d", w.name, v, w.number)
		}
	}
}

// TestRegistryOwners checks who owns the names in the global registry: the
// keyprovider service resolves to ocicrypt's registration (keyproviderpb
// adds none), AA and CDH to guestd's files, registered under repository
// paths that cannot collide with another module's.
func TestRegistryOwners(t *testing.T) {
	for _, c := range []struct {
		name protoreflect.FullName
		path string
	}{
		{"keyprovider.KeyProviderService", "keyprovider.proto"},
		{"attestation_agent.AttestationAgentService", "agent/api/proto/attestation-agent.proto"},
		{"api.ImagePullService", "agent/api/proto/confidential_data_hub.proto"},
	} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(c.name)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if p := d.ParentFile().Path(); p != c.path {
			t.Errorf("%s registered from %s, want %s", c.name, p, c.path)
		}
	}
	if got := (&keyproviderpb.KeyProviderKeyWrapProtocolInput{}).ProtoReflect().Descriptor().ParentFile(); got != ocikp.File_keyprovider_proto {
		t.Errorf("keyproviderpb's messages come from %s, want ocicrypt's", got.Path())
	}
}
