package service_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/ocicrypt/blockcipher"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"google.golang.org/grpc/codes"

	"github.com/guestd/guestd/agent/api/keyproviderpb"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/imagepull/encrypt"
	"github.com/guestd/guestd/kbc/keyprovider"
	"github.com/guestd/guestd/test/images"
	"github.com/guestd/guestd/test/registry"
)

// imageEnv is a test KBS and a real registry holding busybox plain
// (app/plain:1) and encrypted under a KEK in the KBS, then cosign-signed
// (app/enc:1).
type imageEnv struct {
	*kbsEnv
	reg       *registry.Registry
	plain     images.Image
	plainRef  images.Ref
	encRef    images.Ref
	cosignPub []byte
}

const kekURI = "kbs:///default/image-key/1"

func newImageEnv(t *testing.T) *imageEnv {
	t.Helper()
	e := &imageEnv{kbsEnv: newKBSEnv(t, ""), reg: registry.Start(t, registry.Options{}), plain: images.Busybox(t)}
	e.plainRef = images.Push(t, e.plain, e.reg, "app/plain:1")
	err := encrypt.Encrypt(context.Background(), "docker://"+e.reg.Host+"/app/plain:1", "docker://"+e.reg.Host+"/app/enc:1",
		encrypt.Options{KBSURL: e.kbs.URL, AdminKey: e.adminKey, KeyID: kekURI, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	e.encRef = images.Ref{Target: e.reg, Repo: "app/enc", Tag: "1", Digest: images.ManifestDigest(t, e.reg, "app/enc", "1")}
	e.cosignPub = images.CosignSign(t, t.TempDir(), e.encRef)
	return e
}

// get fetches a registry path.
func (e *imageEnv) get(t *testing.T, path, accept string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.reg.URL+path, nil)
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := e.reg.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: HTTP %d, %v", path, resp.StatusCode, err)
	}
	return b
}

// encryptedLayer returns the encrypted image's layer descriptor and blob.
func (e *imageEnv) encryptedLayer(t *testing.T) (ocispec.Descriptor, []byte) {
	t.Helper()
	var m ocispec.Manifest
	if err := json.Unmarshal(e.get(t, "/v2/app/enc/manifests/"+e.encRef.Digest.String(), ocispec.MediaTypeImageManifest), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 || !strings.HasSuffix(m.Layers[0].MediaType, "+encrypted") {
		t.Fatalf("encrypted image layers %+v", m.Layers)
	}
	return m.Layers[0], e.get(t, "/v2/app/enc/blobs/"+m.Layers[0].Digest.String(), "")
}

// unwrapInput is the keyprovider protocol's unwrap request for an
// annotation packet (its JSON), with the annotation as Go ocicrypt writes
// it (base64) or as the Rust CDH writes it (an array of numbers).
func unwrapInput(t *testing.T, packet []byte, numbers bool) *keyproviderpb.KeyProviderKeyWrapProtocolInput {
	t.Helper()
	var ann any = packet
	if numbers {
		nums := make([]int, len(packet))
		for i, b := range packet {
			nums[i] = int(b)
		}
		ann = nums
	}
	in, err := json.Marshal(map[string]any{
		"op":              "keyunwrap",
		"keywrapparams":   map[string]any{},
		"keyunwrapparams": map[string]any{"dc": map[string]any{"Parameters": map[string]any{}}, "annotation": ann},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: in}
}

// TestUnWrapKey unwraps the layer key of a real encrypted layer over every
// transport and proves the private options right by decrypting the layer
// blob with them (HMAC checked) into the plain layer.
func TestUnWrapKey(t *testing.T) {
	e := newImageEnv(t)
	layer, blob := e.encryptedLayer(t)
	packet, err := base64.StdEncoding.DecodeString(layer.Annotations[keyprovider.AnnotationID])
	if err != nil {
		t.Fatalf("annotation %s: %v", keyprovider.AnnotationID, err)
	}
	var pub blockcipher.PublicLayerBlockCipherOptions
	pubJSON, err := base64.StdEncoding.DecodeString(layer.Annotations["org.opencontainers.image.enc.pubopts"])
	if err != nil || json.Unmarshal(pubJSON, &pub) != nil {
		t.Fatalf("pubopts: %v", err)
	}
	// A packet whose kid names a missing KEK, and one naming another key.
	withKID := func(kid string) []byte {
		var p map[string]any
		if err := json.Unmarshal(packet, &p); err != nil {
			t.Fatal(err)
		}
		p["kid"] = kid
		b, _ := json.Marshal(p)
		return b
	}
	e.put(t, "kbs:///default/image-key/wrong", bytes.Repeat([]byte{7}, 32))

	kp := service.NewKeyProvider(service.KeyProviderConfig{KBC: e.client, Logger: testLogger(t)})
	for _, tr := range transports() {
		t.Run(tr.name, func(t *testing.T) {
			ctx := ctxT(t)
			_, side := tr.serve(t, nil, nil, kp)
			for _, numbers := range []bool{false, true} {
				out, err := side.kp.UnWrapKey(ctx, unwrapInput(t, packet, numbers))
				if err != nil {
					t.Fatalf("UnWrapKey (numbers %v): %v", numbers, err)
				}
				var res struct {
					KeyUnwrapResults struct {
						OptsData []byte `json:"optsdata"`
					} `json:"keyunwrapresults"`
				}
				if err := json.Unmarshal(out.GetKeyProviderKeyWrapProtocolOutput(), &res); err != nil {
					t.Fatalf("output %s: %v", out.GetKeyProviderKeyWrapProtocolOutput(), err)
				}
				var priv blockcipher.PrivateLayerBlockCipherOptions
				if err := json.Unmarshal(res.KeyUnwrapResults.OptsData, &priv); err != nil || len(priv.SymmetricKey) != 32 {
					t.Fatalf("private options: %v (key %d bytes)", err, len(priv.SymmetricKey))
				}
				h, err := blockcipher.NewLayerBlockCipherHandler()
				if err != nil {
					t.Fatal(err)
				}
				r, _, err := h.Decrypt(bytes.NewReader(blob), blockcipher.LayerBlockCipherOptions{Public: pub, Private: priv})
				if err != nil {
					t.Fatal(err)
				}
				plain, err := io.ReadAll(r)
				if err != nil {
					t.Fatalf("decrypt the layer: %v", err)
				}
				if got, want := digest.FromBytes(plain), e.plain.Layers[0].Digest; got != want {
					t.Fatalf("decrypted layer %s, want the plain layer %s", got, want)
				}
			}
			for _, tc := range []struct {
				name   string
				packet []byte
				code   codes.Code
				parts  []string
			}{
				{"not JSON", []byte("not a packet"), codes.InvalidArgument, []string{"malformed annotation packet"}},
				{"bad kid", withKID("kbs:///default/image-key"), codes.InvalidArgument, []string{"kbs:///default/image-key"}},
				{"missing KEK", withKID("kbs:///default/image-key/missing"), codes.NotFound, []string{"kbs:///default/image-key/missing", "resource not found"}},
				{"wrong KEK", withKID("kbs:///default/image-key/wrong"), codes.PermissionDenied, []string{"kbs:///default/image-key/wrong", "authentication failed"}},
			} {
				_, err := side.kp.UnWrapKey(ctx, unwrapInput(t, tc.packet, false))
				wantCode(t, tc.name, err, tc.code, append(tc.parts, "UnWrapKey")...)
			}
			_, err := side.kp.UnWrapKey(ctx, &keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte("{")})
			wantCode(t, "malformed input", err, codes.InvalidArgument, "malformed protocol input")
			_, err = side.kp.WrapKey(ctx, &keyproviderpb.KeyProviderKeyWrapProtocolInput{KeyProviderKeyWrapProtocolInput: []byte(`{"op":"keywrap"}`)})
			wantCode(t, "WrapKey", err, codes.Unimplemented, "not supported in the guest")
		})
	}
	_, err = service.NewKeyProvider(service.KeyProviderConfig{}).UnWrapKey(context.Background(), unwrapInput(t, packet, false))
	wantCode(t, "no KBC", err, codes.FailedPrecondition, "no KBC")
}

// rootfsMatches compares every file of the busybox image with the bundle's
// rootfs.
func rootfsMatches(t *testing.T, bundle string) {
	t.Helper()
	n := 0
	for _, en := range images.BusyboxEntries(t) {
		p := filepath.Join(bundle, "rootfs", en.Name)
		switch en.Kind {
		case images.KindFile:
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, en.Content) {
				t.Fatalf("rootfs %s differs from the image (%v)", en.Name, err)
			}
			n++
		case images.KindSymlink:
			if target, err := os.Readlink(p); err != nil || target != en.Target {
				t.Fatalf("rootfs %s -> %q, want %q (%v)", en.Name, target, en.Target, err)
			}
			n++
		}
	}
	if n < 10 {
		t.Fatalf("only %d entries checked", n)
	}
	var spec struct {
		Root struct {
			Path string `json:"path"`
		} `json:"root"`
		Process struct {
			Args []string `json:"args"`
		} `json:"process"`
	}
	data, err := os.ReadFile(filepath.Join(bundle, "config.json"))
	if err != nil || json.Unmarshal(data, &spec) != nil || spec.Root.Path != "rootfs" || fmt.Sprint(spec.Process.Args) != "[/bin/sh]" {
		t.Fatalf("config.json: %v\n%s", err, data)
	}
}
