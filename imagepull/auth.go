package imagepull

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/types"
)

// authFile is a containers-auth.json / docker config.json.
type authFile struct {
	Auths map[string]struct {
		Auth     string `json:"auth"`
		Username string `json:"username"`
		Password string `json:"password"`
	} `json:"auths"`
}

// credentialsFor finds the credentials auth.json holds for ref: the most
// specific entry (host/namespace/repo, then shorter namespaces, then the
// host) wins, as containers-auth.json(5) and image-rs do. Docker Hub's
// aliases all match docker.io. It returns nil when there is none.
func credentialsFor(data []byte, ref reference.Named) (*types.DockerAuthConfig, error) {
	var f authFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("registry credentials are not an auth.json document: %w", err)
	}
	entries := map[string]*types.DockerAuthConfig{}
	for key, e := range f.Auths {
		cred := &types.DockerAuthConfig{Username: e.Username, Password: e.Password}
		if e.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(e.Auth)
			if err != nil {
				return nil, fmt.Errorf("registry credentials for %q: auth is not base64", key)
			}
			user, pass, ok := strings.Cut(string(raw), ":")
			if !ok {
				return nil, fmt.Errorf("registry credentials for %q: auth is not user:password", key)
			}
			cred.Username, cred.Password = user, pass
		}
		entries[normalizeAuthKey(key)] = cred
	}
	name := reference.Domain(ref) + "/" + reference.Path(ref)
	for {
		if c, ok := entries[name]; ok {
			return c, nil
		}
		i := strings.LastIndex(name, "/")
		if i < 0 {
			return nil, nil
		}
		name = name[:i]
	}
}

func normalizeAuthKey(key string) string {
	key = strings.TrimPrefix(strings.TrimPrefix(key, "https://"), "http://")
	key = strings.TrimSuffix(key, "/")
	key = strings.TrimSuffix(key, "/v1")
	key = strings.TrimSuffix(key, "/v2")
	for _, alias := range []string{"index.docker.io", "registry-1.docker.io"} {
		if key == alias || strings.HasPrefix(key, alias+"/") {
			key = "docker.io" + key[len(alias):]
		}
	}
	return key
}
