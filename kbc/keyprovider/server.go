package keyprovider

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	pb "github.com/containers/ocicrypt/utils/keyprovider"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/guestd/guestd/kbc/resource"
)

// DefaultKEKRepo is where WrapKey puts a KEK when the parameters name
// none: kbs:///default/image-kek/<uuid>.
const DefaultKEKRepo = "default/image-kek"

// Registrar stores a KEK in a KBS under the resource its kid names;
// *kbs.Admin is one.
type Registrar interface {
	SetResource(ctx context.Context, uri resource.URI, data []byte) error
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Unwrapper serves UnWrapKey; nil: UnWrapKey is Unimplemented (as
	// upstream coco_keyprovider).
	Unwrapper *Unwrapper
	// Registrar, if set, receives each KEK before WrapKey answers with a
	// packet wrapped under it (a random KEK once, a keypath KEK on every
	// call); a failure fails the WrapKey.
	Registrar Registrar
	// Logger receives one line per call (kid, algorithm, outcome; never
	// key material). Default: discard.
	Logger *slog.Logger
}

// Server serves ocicrypt's keyprovider gRPC protocol
// (keyprovider.KeyProviderService) for the attestation-agent provider.
// Register it with keyprovider.RegisterKeyProviderServiceServer. It is
// safe for concurrent use.
type Server struct {
	pb.UnimplementedKeyProviderServiceServer
	cfg ServerConfig
	log *slog.Logger

	mu   sync.Mutex        // serialises KEK generation and registration
	keks map[string][]byte // kid → the random KEK generated for it
}

// NewServer returns a Server for cfg.
func NewServer(cfg ServerConfig) *Server {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg, log: log}
}

// protocolInput is the JSON of KeyProviderKeyWrapProtocolInput. []byte
// members take either a base64 string (Go ocicrypt) or an array of numbers
// (Rust serde); parameters are param.
type protocolInput struct {
	Op            string `json:"op"`
	KeyWrapParams struct {
		EC       *cryptoConfig `json:"ec"`
		OptsData []byte        `json:"optsdata"`
	} `json:"keywrapparams"`
	KeyUnwrapParams struct {
		DC         *cryptoConfig `json:"dc"`
		Annotation []byte        `json:"annotation"`
	} `json:"keyunwrapparams"`
}

type cryptoConfig struct {
	Parameters map[string][]param `json:"Parameters"`
}

// param is one parameter value: standard base64 (how Go ocicrypt
// marshals [][]byte), else the string itself; or an array of numbers.
type param []byte

func (p *param) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		if b, err := base64.StdEncoding.Strict().DecodeString(s); err == nil {
			*p = b
		} else {
			*p = []byte(s)
		}
		return nil
	}
	var b []byte
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("parameter is neither a string nor an array of bytes: %w", err)
	}
	*p = b
	return nil
}

type wrapOutput struct {
	KeyWrapResults struct {
		Annotation []byte `json:"annotation"`
	} `json:"keywrapresults"`
}

type unwrapOutput struct {
	KeyUnwrapResults struct {
		OptsData []byte `json:"optsdata"`
	} `json:"keyunwrapresults"`
}

func decodeInput(in *pb.KeyProviderKeyWrapProtocolInput, op string) (*protocolInput, error) {
	var pi protocolInput
	if err := json.Unmarshal(in.GetKeyProviderKeyWrapProtocolInput(), &pi); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "%s: malformed protocol input: %v", op, err)
	}
	if pi.Op != "" && pi.Op != op {
		return nil, status.Errorf(codes.InvalidArgument, "%s: input op is %q", op, pi.Op)
	}
	return &pi, nil
}

// WrapKey implements the keywrap operation: it takes the one
// attestation-agent parameter (coco_keyprovider's keyid, keypath,
// algorithm), uses the KEK in keypath or a random one (one per kid, kept
// until Close), registers it with the Registrar if there is one, and
// answers with the packet.
func (s *Server) WrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	pi, err := decodeInput(in, "keywrap")
	if err != nil {
		return nil, err
	}
	defer clear(pi.KeyWrapParams.OptsData)
	invalid := func(format string, args ...any) error {
		err := status.Errorf(codes.InvalidArgument, "keywrap: "+format, args...)
		s.log.Warn("keyprovider WrapKey refused", "err", err)
		return err
	}
	if pi.KeyWrapParams.EC == nil {
		return nil, invalid("no ec")
	}
	if pi.KeyWrapParams.OptsData == nil {
		return nil, invalid("no optsdata")
	}
	raw := pi.KeyWrapParams.EC.Parameters[Name]
	if len(raw) != 1 {
		return nil, invalid("%d %q parameters, want one", len(raw), Name)
	}
	p, err := ParseParams(string(raw[0]))
	if err != nil {
		return nil, invalid("%v", err)
	}
	if p.Sample {
		return nil, invalid("sample=true is refused: it wraps with a published key and a fixed IV")
	}
	kid := p.KeyID
	if kid == "" {
		kid = "kbs:///" + DefaultKEKRepo + "/" + uuid.NewString()
	}
	uri, err := parseKID(kid)
	if err != nil {
		return nil, invalid("keyid: %v", err)
	}
	alg := p.Algorithm
	if alg == "" {
		alg = A256GCM
	}

	kek, source, err := s.kek(ctx, uri, p.KeyPath)
	if err != nil {
		s.log.Warn("keyprovider WrapKey failed", "kid", uri.String(), "err", err)
		return nil, err
	}
	defer clear(kek)
	packet, err := wrap(kek, uri.String(), alg, pi.KeyWrapParams.OptsData)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "keywrap: %v", err)
	}
	var out wrapOutput
	out.KeyWrapResults.Annotation = packet
	b, err := json.Marshal(out)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "keywrap: %v", err)
	}
	s.log.Info("keyprovider wrapped a layer key", "kid", uri.String(), "algorithm", alg,
		"kek", source, "registrar", s.cfg.Registrar != nil)
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: b}, nil
}

// kek returns a copy of the KEK to wrap under kid: the keypath file's
// (registered on every call, as upstream), or the random KEK this server
// generated and registered for kid on first use. One KEK per kid matters:
// ocicrypt calls WrapKey once per layer, and a fresh KEK per call would
// replace the previous layers' KEK in the KBS (upstream coco_keyprovider
// does just that when given keyid without keypath).
func (s *Server) kek(ctx context.Context, uri resource.URI, keyPath string) (kek []byte, source string, err error) {
	kid := uri.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	if keyPath == "" {
		if k, ok := s.keks[kid]; ok {
			return bytes.Clone(k), "random, cached", nil
		}
	}
	source = "file"
	if keyPath != "" {
		if kek, err = readKEK(keyPath); err != nil {
			return nil, "", status.Errorf(codes.InvalidArgument, "keywrap: %v", err)
		}
	} else {
		source = "random"
		kek = make([]byte, KEKSize)
		if _, err := rand.Read(kek); err != nil {
			return nil, "", status.Errorf(codes.Internal, "keywrap: generate KEK: %v", err)
		}
	}
	if s.cfg.Registrar != nil {
		if err := s.cfg.Registrar.SetResource(ctx, uri, kek); err != nil {
			clear(kek)
			return nil, "", status.Error(codes.Unavailable, fmt.Sprintf("keywrap: register KEK %s: %v", uri, err))
		}
	}
	if keyPath == "" {
		if s.keks == nil {
			s.keks = map[string][]byte{}
		}
		s.keks[kid] = bytes.Clone(kek)
	} else if k, ok := s.keks[kid]; ok {
		// The file's KEK replaced the random one in the KBS.
		clear(k)
		delete(s.keks, kid)
	}
	return kek, source, nil
}

// Close forgets (and zeroes) the random KEKs WrapKey generated. Call it
// after the gRPC server has stopped.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for kid, k := range s.keks {
		clear(k)
		delete(s.keks, kid)
	}
}

// UnWrapKey implements the keyunwrap operation through the Unwrapper.
func (s *Server) UnWrapKey(ctx context.Context, in *pb.KeyProviderKeyWrapProtocolInput) (*pb.KeyProviderKeyWrapProtocolOutput, error) {
	if s.cfg.Unwrapper == nil {
		return nil, status.Error(codes.Unimplemented, "keyunwrap: this key provider has no KBC to unwrap with")
	}
	pi, err := decodeInput(in, "keyunwrap")
	if err != nil {
		return nil, err
	}
	if len(pi.KeyUnwrapParams.Annotation) == 0 {
		return nil, status.Error(codes.InvalidArgument, "keyunwrap: no annotation")
	}
	opts, err := s.cfg.Unwrapper.Unwrap(ctx, pi.KeyUnwrapParams.Annotation)
	if err != nil {
		s.log.Warn("keyprovider UnWrapKey failed", "err", err)
		return nil, status.Error(unwrapCode(err), err.Error())
	}
	defer clear(opts)
	var out unwrapOutput
	out.KeyUnwrapResults.OptsData = opts
	b, err := json.Marshal(out)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "keyunwrap: %v", err)
	}
	s.log.Info("keyprovider unwrapped a layer key")
	return &pb.KeyProviderKeyWrapProtocolOutput{KeyProviderKeyWrapProtocolOutput: b}, nil
}

func unwrapCode(err error) codes.Code {
	switch {
	case errors.Is(err, ErrMalformedPacket), errors.Is(err, ErrUnsupported):
		return codes.InvalidArgument
	case errors.Is(err, ErrAuthentication):
		return codes.PermissionDenied
	case errors.Is(err, ErrNoKBC):
		return codes.FailedPrecondition
	}
	return codes.Unavailable
}

// readKEK reads a KEK file: a regular file of exactly KEKSize bytes.
func readKEK(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keypath: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keypath: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != KEKSize {
		return nil, fmt.Errorf("keypath %s: a KEK file must be a regular file of %d bytes", path, KEKSize)
	}
	kek := make([]byte, KEKSize)
	if _, err := io.ReadFull(f, kek); err != nil {
		clear(kek)
		return nil, fmt.Errorf("keypath %s: %w", path, err)
	}
	return kek, nil
}
