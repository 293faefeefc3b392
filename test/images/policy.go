package images

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
)

// AcceptAnythingPolicy returns a containers policy.json accepting every
// image.
func AcceptAnythingPolicy() []byte {
	return []byte(`{"default":[{"type":"insecureAcceptAnything"}],"transports":{}}` + "\n")
}

// SignedByPolicy returns a containers policy.json that rejects everything
// except docker images signed (GPG simple signing) by a key in the keyring
// file keyringPath, with the default signedIdentity (matchRepoDigestOrExact).
// Other transports (oci:, dir:) are accepted, so such policies can be used
// with skopeo copying to a local layout.
func SignedByPolicy(keyringPath string) []byte {
	return mustJSON(map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{
			"docker": map[string]any{
				"": []any{map[string]any{"type": "signedBy", "keyType": "GPGKeys", "keyPath": keyringPath}},
			},
			"oci": map[string]any{"": []any{map[string]any{"type": "insecureAcceptAnything"}}},
			"dir": map[string]any{"": []any{map[string]any{"type": "insecureAcceptAnything"}}},
		},
	})
}

// CosignPolicy returns a containers policy.json that rejects everything
// except docker images with a cosign (sigstoreSigned) signature by the
// public key pubPEM. signedIdentity is matchRepository, because cosign
// signatures name the repository only. (c/image takes keyData as base64,
// encoding/json does that for []byte.) Debian's skopeo cannot evaluate it:
// its sigstore support is disabled.
func CosignPolicy(pubPEM []byte) []byte {
	return mustJSON(map[string]any{
		"default": []any{map[string]any{"type": "reject"}},
		"transports": map[string]any{
			"docker": map[string]any{
				"": []any{map[string]any{
					"type":           "sigstoreSigned",
					"keyData":        pubPEM,
					"signedIdentity": map[string]any{"type": "matchRepository"},
				}},
			},
			"oci": map[string]any{"": []any{map[string]any{"type": "insecureAcceptAnything"}}},
			"dir": map[string]any{"": []any{map[string]any{"type": "insecureAcceptAnything"}}},
		},
	})
}

// LookasideYAML returns a registries.d file telling readers that GPG
// simple signatures of every docker image live under the directory dir
// (<dir>/<repo>@sha256=<hex>/signature-N). It sets both the current key
// (lookaside, containers/image) and the deprecated one image-rs reads
// (sigstore).
func LookasideYAML(dir string) []byte {
	u := "file://" + filepath.ToSlash(dir)
	return []byte(fmt.Sprintf("default-docker:\n  lookaside: %q\n  sigstore: %q\n", u, u))
}

// stagingYAML returns a registries.d file telling writers (skopeo
// --sign-by) to store signatures under dir, and to read a source image's
// existing signatures from there too (not from the machine's default
// lookaside).
func stagingYAML(dir string) []byte {
	u := "file://" + filepath.ToSlash(dir)
	return []byte(fmt.Sprintf("default-docker:\n  lookaside: %q\n  lookaside-staging: %q\n", u, u))
}

// RegistriesD writes LookasideYAML(lookasideDir) into a new registries.d
// directory and returns the directory, for skopeo --registries.d or
// types.SystemContext.RegistriesDirPath.
func RegistriesD(t testing.TB, lookasideDir string) string {
	t.Helper()
	dir := shortTempDir(t, "registries.d")
	writeFile(t, filepath.Join(dir, "lookaside.yaml"), LookasideYAML(lookasideDir))
	return dir
}

// mustJSON encodes v, which is built from maps, slices and strings and
// cannot fail to encode.
func mustJSON(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("encode policy: %v", err))
	}
	return append(b, '\n')
}
