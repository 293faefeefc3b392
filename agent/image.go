package agent

import (
	"bytes"
	"fmt"

	"github.com/BurntSushi/toml"

	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/kbc"
)

// PullOptions turns the CDH [image] configuration (with upstream's
// precedence rules already applied by package config) into the puller's
// options. requirePolicy is agent.enable_signature_verification.
func PullOptions(img config.Image, requirePolicy bool, client kbc.Client) (imagepull.Options, error) {
	o := imagepull.Options{
		WorkDir:             img.WorkDir,
		KBC:                 client,
		RequirePolicy:       requirePolicy,
		AuthURI:             img.AuthenticatedRegistryCredentialsURI,
		MaxConcurrentLayers: img.MaxConcurrentLayerDownloadsPerImage,
	}
	var inline string
	o.PolicyURI, inline = img.SecurityPolicy()
	o.Policy = []byte(inline)
	o.SigstoreConfigURI, inline = img.Sigstore()
	o.SigstoreConfig = []byte(inline)
	uri, table := img.Registries()
	o.RegistriesConfURI = uri
	if table != nil {
		conf, err := registriesConf(table)
		if err != nil {
			return imagepull.Options{}, err
		}
		o.RegistriesConf = conf
	}
	if p := img.ImagePullProxy; p != nil {
		o.HTTPSProxy, o.HTTPProxy, o.NoProxy = p.HTTPSProxy, p.HTTPProxy, p.NoProxy
	}
	for _, ca := range img.ExtraRootCertificates {
		o.ExtraRootCAs = append(o.ExtraRootCAs, []byte(ca))
	}
	return o, nil
}

// registriesConf renders image-rs's inline registry table as a
// containers-registries.conf(5) document, which is what containers/image
// reads (the key names are the same).
func registriesConf(rc *config.RegistryConfig) ([]byte, error) {
	type mirror struct {
		Location string `toml:"location"`
		Insecure bool   `toml:"insecure,omitempty"`
	}
	type registry struct {
		Prefix   string   `toml:"prefix,omitempty"`
		Location string   `toml:"location,omitempty"`
		Insecure bool     `toml:"insecure,omitempty"`
		Blocked  bool     `toml:"blocked,omitempty"`
		Mirror   []mirror `toml:"mirror,omitempty"`
	}
	doc := struct {
		Unqualified []string   `toml:"unqualified-search-registries,omitempty"`
		Registry    []registry `toml:"registry,omitempty"`
	}{Unqualified: rc.UnqualifiedSearchRegistries}
	for _, r := range rc.Registry {
		out := registry{Prefix: r.Prefix, Location: r.Location, Insecure: r.Insecure, Blocked: r.Blocked}
		for _, m := range r.Mirror {
			out.Mirror = append(out.Mirror, mirror{Location: m.Location, Insecure: m.Insecure})
		}
		doc.Registry = append(doc.Registry, out)
	}
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(doc); err != nil {
		return nil, fmt.Errorf("registry configuration: %w", err)
	}
	return b.Bytes(), nil
}
