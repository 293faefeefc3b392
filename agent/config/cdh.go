package config

import (
	"fmt"
	"math"
	"path"
	"strings"
)

// Defaults of the confidential data hub and image-rs.
const (
	DefaultCDHSocket = "unix:///run/confidential-containers/cdh.sock"
	// DefaultImageWorkDir is image-rs's default (the comment in upstream's
	// example CDH config saying /run/image-rs is wrong).
	DefaultImageWorkDir                = "/run/kata-containers/image/"
	DefaultMaxConcurrentLayerDownloads = 3
	defaultUnqualifiedSearchRegistry   = "docker.io"
	maxConcurrentLayerDownloadsCeiling = math.MaxInt32
)

// CDH is the confidential data hub's configuration.
type CDH struct {
	Socket                       string // unix:// socket CDH serves on
	SkipSealedSecretVerification bool
	AA                           CDHAA  // [aa]
	KBC                          CDHKBC // [kbc]
	Credentials                  []Credential
	Image                        Image
	// ImageSet is true when the file had an [image] section. Without one
	// upstream takes the image settings from the kernel command line; see
	// ResolveCDH and ImageFromCmdline.
	ImageSet bool
	Log      Log
	// Unknown lists keys of the file guestd does not know, as dotted
	// paths, for the caller to log.
	Unknown []string
}

// CDHAA is [aa].
type CDHAA struct {
	AASocket string // default DefaultAASocket
}

// CDHKBC is [kbc]: the KBC CDH uses for resources.
type CDHKBC struct {
	Name string // required
	URL  string // default ""; an http(s) URL for cc_kbc, ignored otherwise
	// KBSCert is an optional extra root CA (PEM) for the KBS; empty means
	// none.
	KBSCert string
}

// Image is image-rs's configuration, the CDH [image] section.
type Image struct {
	WorkDir                             string
	MaxConcurrentLayerDownloadsPerImage int
	ImageSecurityPolicyURI              string
	ImageSecurityPolicy                 string // inline policy JSON
	SigstoreConfigURI                   string
	SigstoreConfig                      string // inline sigstore YAML
	AuthenticatedRegistryCredentialsURI string
	RegistryConfigurationURI            string
	RegistryConfig                      *RegistryConfig // inline table
	ImagePullProxy                      *ImagePullProxy
	// ExtraRootCertificates are PEM root CAs for registries, proxies and
	// cosign. They are not checked here.
	ExtraRootCertificates []string
}

// ImagePullProxy is [image.image_pull_proxy]; empty fields are unset.
type ImagePullProxy struct {
	HTTPSProxy string
	HTTPProxy  string
	NoProxy    string
}

// RegistryConfig is a containers-registries.conf subset: [image.registry_config]
// inline, or the TOML document registry_configuration_uri points at.
type RegistryConfig struct {
	// UnqualifiedSearchRegistries is "unqualified-search-registries",
	// ["docker.io"] when absent.
	UnqualifiedSearchRegistries []string
	Registry                    []Registry
}

// Registry is one [[registry]].
type Registry struct {
	Prefix   string
	Insecure bool
	Blocked  bool
	Location string
	Mirror   []Mirror
}

// EffectivePrefix is Prefix, or Location when Prefix is empty (upstream's
// validate_and_tidy).
func (r Registry) EffectivePrefix() string {
	if r.Prefix == "" {
		return r.Location
	}
	return r.Prefix
}

// Mirror is one [[registry.mirror]].
type Mirror struct {
	Location string // required
	Insecure bool
}

// DefaultImage is image-rs's default configuration.
func DefaultImage() Image {
	return Image{
		WorkDir:                             DefaultImageWorkDir,
		MaxConcurrentLayerDownloadsPerImage: DefaultMaxConcurrentLayerDownloads,
	}
}

// SecurityPolicy says where the image security policy comes from: the URI
// when set (it wins), else the inline policy. Both empty means no policy,
// so no signature verification.
func (i Image) SecurityPolicy() (uri, inline string) {
	if i.ImageSecurityPolicyURI != "" {
		return i.ImageSecurityPolicyURI, ""
	}
	return "", i.ImageSecurityPolicy
}

// Sigstore says where the sigstore config comes from: the URI wins over
// the inline config.
func (i Image) Sigstore() (uri, inline string) {
	if i.SigstoreConfigURI != "" {
		return i.SigstoreConfigURI, ""
	}
	return "", i.SigstoreConfig
}

// Registries says where the registry configuration comes from. Unlike the
// policy and sigstore settings, the inline table wins over the URI
// (image-rs behaviour).
func (i Image) Registries() (uri string, inline *RegistryConfig) {
	if i.RegistryConfig != nil {
		return "", i.RegistryConfig
	}
	return i.RegistryConfigurationURI, nil
}

// ImageFromCmdline is the image configuration upstream uses when the CDH
// config has no [image] section: defaults plus agent.https_proxy,
// agent.http_proxy, agent.no_proxy, agent.image_registry_auth and, only
// when agent.enable_signature_verification=true, agent.image_policy_file.
//
// Stricter than upstream: signature verification enabled without
// agent.image_policy_file is an error (upstream silently verifies nothing).
func ImageFromCmdline(cmd *Cmdline) (Image, error) {
	if cmd == nil {
		cmd = DefaultCmdline()
	}
	img := DefaultImage()
	img.AuthenticatedRegistryCredentialsURI = cmd.ImageRegistryAuth
	if cmd.EnableSignatureVerification {
		if cmd.ImagePolicyFile == "" {
			return Image{}, &KeyError{Source: SourceCmdline, Key: KeyEnableSignatureVerification, Reason: "is true but " + KeyImagePolicyFile + " is not set; there is no policy to verify against"}
		}
		img.ImageSecurityPolicyURI = cmd.ImagePolicyFile
	}
	if cmd.HTTPSProxy != "" || cmd.HTTPProxy != "" || cmd.NoProxy != "" {
		img.ImagePullProxy = &ImagePullProxy{HTTPSProxy: cmd.HTTPSProxy, HTTPProxy: cmd.HTTPProxy, NoProxy: cmd.NoProxy}
	}
	return img, nil
}

// CDHFromKbcParams is the configuration upstream CDH uses without a config
// file: [kbc] from aa_kbc_params and defaults elsewhere. The image section
// is left to ResolveCDH (ImageSet is false).
func CDHFromKbcParams(p KbcParams) *CDH {
	return &CDH{
		Socket: DefaultCDHSocket,
		AA:     CDHAA{AASocket: DefaultAASocket},
		KBC:    CDHKBC{Name: p.KBC, URL: p.URI},
		Image:  DefaultImage(),
		Log:    Log{Level: DefaultLogLevel},
	}
}

// ParseCDH parses a CDH config file. name is used for the format (".json"
// means JSON, anything else TOML) and in errors. [kbc] with name is
// required, as upstream.
//
// Stricter than upstream: a URI, inline policy or proxy given as an empty
// string is an error (upstream fails only at the first pull; treating it
// as unset could silently turn verification off), sockets must be
// unix:///<absolute path>, work_dir must be absolute, credential paths must
// be under CredentialDir and the registry rules are validated here rather
// than at the first pull.
func ParseCDH(name string, data []byte) (*CDH, error) {
	tree, err := decodeTree(name, data)
	if err != nil {
		return nil, fmt.Errorf("parse CDH config: %w", err)
	}
	r := &reader{src: name}
	root := newTable(r, "", tree)
	c := readCDH(root)
	if r.err != nil {
		return nil, fmt.Errorf("parse CDH config: %w", r.err)
	}
	c.Unknown = root.unknown()
	return c, nil
}

// readCDH reads the CDH schema from root, the whole file or a table of
// guestd's own file; errors go to root's reader.
func readCDH(root *table) *CDH {
	r := root.r
	c := CDHFromKbcParams(KbcParams{})

	if s, ok := root.str("socket"); ok {
		checkSocket(root, "socket", s)
		c.Socket = s
	}
	if b, ok := root.boolean("skip_sealed_secret_verification"); ok {
		c.SkipSealedSecretVerification = b
	}
	if at, ok := root.sub("aa"); ok {
		if s, ok := at.str("aa_socket"); ok {
			checkSocket(at, "aa_socket", s)
			c.AA.AASocket = s
		}
	}
	if kt, ok := root.sub("kbc"); ok {
		n, hasName := kt.str("name")
		if !hasName {
			kt.missing("name")
		}
		u, _ := kt.str("url")
		if cert, ok := kt.str("kbs_cert"); ok {
			c.KBC.KBSCert = cert
		}
		if hasName && r.err == nil {
			if err := checkKBC(n, ""); err != nil && n != KBCCC {
				r.fail(kt.keyPath("name"), "%v", err)
			} else if err := checkKBC(n, u); err != nil {
				r.fail(kt.keyPath("url"), "%v", err)
			}
		}
		c.KBC.Name, c.KBC.URL = n, u
	} else {
		root.missing("kbc")
	}
	if cts, ok := root.tables("credentials"); ok {
		for _, ct := range cts {
			var cr Credential
			var ok bool
			if cr.ResourceURI, ok = ct.str("resource_uri"); !ok {
				ct.missing("resource_uri")
			} else if err := checkResourceURI(cr.ResourceURI); err != nil {
				r.fail(ct.keyPath("resource_uri"), "%v", err)
			}
			if cr.Path, ok = ct.str("path"); !ok {
				ct.missing("path")
			} else if err := checkCredentialPath(cr.Path); err != nil {
				r.fail(ct.keyPath("path"), "%v", err)
			}
			c.Credentials = append(c.Credentials, cr)
		}
		if r.err == nil {
			if err := checkCredentialSet(c.Credentials); err != nil {
				r.fail("credentials", "%v", err)
			}
		}
	}
	if it, ok := root.sub("image"); ok {
		c.ImageSet = true
		readImage(it, &c.Image)
	}
	readLog(root, &c.Log)
	return c
}

func checkSocket(t *table, key, s string) {
	p, ok := strings.CutPrefix(s, "unix://")
	if !ok || !path.IsAbs(p) {
		t.r.fail(t.keyPath(key), "%s is not a unix socket address, expected unix:///<absolute path>", quoteShort(s))
	}
}

// checkCredentialSet rejects two credentials writing the same path from
// different resources (upstream keys them by path and keeps the last).
func checkCredentialSet(creds []Credential) error {
	seen := map[string]string{}
	for _, cr := range creds {
		if prev, ok := seen[cr.Path]; ok && prev != cr.ResourceURI {
			return fmt.Errorf("path %s is written from both %s and %s", quoteShort(cr.Path), quoteShort(prev), quoteShort(cr.ResourceURI))
		}
		seen[cr.Path] = cr.ResourceURI
	}
	return nil
}

// nonEmpty reads an optional string that must not be empty when present.
func nonEmpty(t *table, key string, dst *string) {
	if s, ok := t.str(key); ok {
		if s == "" {
			t.r.fail(t.keyPath(key), "is empty; leave the key out to unset it")
		}
		*dst = s
	}
}

func readImage(it *table, img *Image) {
	r := it.r
	if wd, ok := it.str("work_dir"); ok {
		if !path.IsAbs(wd) {
			r.fail(it.keyPath("work_dir"), "%s is not an absolute path", quoteShort(wd))
		}
		img.WorkDir = wd
	}
	if n, ok := it.integer("max_concurrent_layer_downloads_per_image"); ok {
		if n < 1 || n > maxConcurrentLayerDownloadsCeiling {
			r.fail(it.keyPath("max_concurrent_layer_downloads_per_image"), "%d is out of range, expected 1 to %d", n, maxConcurrentLayerDownloadsCeiling)
		}
		img.MaxConcurrentLayerDownloadsPerImage = int(n)
	}
	nonEmpty(it, "image_security_policy_uri", &img.ImageSecurityPolicyURI)
	nonEmpty(it, "image_security_policy", &img.ImageSecurityPolicy)
	nonEmpty(it, "sigstore_config_uri", &img.SigstoreConfigURI)
	nonEmpty(it, "sigstore_config", &img.SigstoreConfig)
	nonEmpty(it, "authenticated_registry_credentials_uri", &img.AuthenticatedRegistryCredentialsURI)
	nonEmpty(it, "registry_configuration_uri", &img.RegistryConfigurationURI)
	if rt, ok := it.sub("registry_config"); ok {
		img.RegistryConfig = readRegistryConfig(rt)
	}
	if pt, ok := it.sub("image_pull_proxy"); ok {
		p := &ImagePullProxy{}
		nonEmpty(pt, "https_proxy", &p.HTTPSProxy)
		nonEmpty(pt, "http_proxy", &p.HTTPProxy)
		if s, ok := pt.str("no_proxy"); ok {
			p.NoProxy = s
		}
		img.ImagePullProxy = p
	}
	if certs, ok := it.strings("extra_root_certificates"); ok {
		img.ExtraRootCertificates = certs
	}
}

func readRegistryConfig(t *table) *RegistryConfig {
	r := t.r
	rc := &RegistryConfig{UnqualifiedSearchRegistries: []string{defaultUnqualifiedSearchRegistry}}
	if regs, ok := t.strings("unqualified-search-registries"); ok {
		rc.UnqualifiedSearchRegistries = regs
	}
	rts, _ := t.tables("registry")
	for _, rt := range rts {
		var reg Registry
		reg.Prefix, _ = rt.str("prefix")
		reg.Insecure, _ = rt.boolean("insecure")
		reg.Blocked, _ = rt.boolean("blocked")
		reg.Location, _ = rt.str("location")
		mts, _ := rt.tables("mirror")
		for _, mt := range mts {
			var m Mirror
			var ok bool
			if m.Location, ok = mt.str("location"); !ok {
				mt.missing("location")
			} else if m.Location == "" {
				r.fail(mt.keyPath("location"), "is empty")
			}
			m.Insecure, _ = mt.boolean("insecure")
			reg.Mirror = append(reg.Mirror, m)
		}
		switch {
		case reg.Prefix == "" && reg.Location == "":
			r.fail(rt.path, "has neither prefix nor location")
		case strings.HasPrefix(reg.Prefix, "*.") && reg.Location == "":
			r.fail(rt.keyPath("prefix"), "%s is a wildcard, which needs a location", quoteShort(reg.Prefix))
		}
		rc.Registry = append(rc.Registry, reg)
	}
	return rc
}

// ParseRegistryConfig parses the TOML registry configuration that
// registry_configuration_uri points at. It returns the keys it does not
// know as dotted paths.
func ParseRegistryConfig(name string, data []byte) (*RegistryConfig, []string, error) {
	tree, err := decodeTree(name, data)
	if err != nil {
		return nil, nil, fmt.Errorf("parse registry config: %w", err)
	}
	r := &reader{src: name}
	root := newTable(r, "", tree)
	rc := readRegistryConfig(root)
	if r.err != nil {
		return nil, nil, fmt.Errorf("parse registry config: %w", r.err)
	}
	return rc, root.unknown(), nil
}

// LoadCDH reads and parses the CDH config file.
func LoadCDH(file string) (*CDH, error) {
	data, err := readConfigFile(file)
	if err != nil {
		return nil, fmt.Errorf("load CDH config: %w", err)
	}
	return ParseCDH(file, data)
}

// ResolveCDH returns the configuration CDH runs with, as upstream's
// ttrpc-cdh builds it:
//
//  1. The file when file is not empty, else CDHFromKbcParams
//     (cmd.KbcParams).
//  2. Without an [image] section, ImageFromCmdline(cmd).
//  3. The environment, which upstream consults when it exports its
//     settings for the KBC client: AA_KBC_PARAMS replaces [kbc] name and
//     url, AA_SOCKET replaces [aa] aa_socket, KBS_CERT is used when
//     kbs_cert is empty, SKIP_SEALED_SECRET_VERIFICATION=true turns the
//     check off, CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS
//     replaces the registry auth URI and RUST_LOG the log level.
//  4. cmd.KBSResources (cdh.kbs_resources) appended to the credentials.
//
// A nil cmd means an empty command line; a nil env an empty environment.
func ResolveCDH(file string, cmd *Cmdline, env LookupEnv) (*CDH, error) {
	if cmd == nil {
		cmd = DefaultCmdline()
	}
	var c *CDH
	if file != "" {
		var err error
		if c, err = LoadCDH(file); err != nil {
			return nil, err
		}
	} else {
		c = CDHFromKbcParams(cmd.KbcParams)
	}
	return finishCDH(c, cmd, env)
}

// finishCDH applies steps 2 to 4 of ResolveCDH to a loaded or derived
// configuration; cmd is not nil.
func finishCDH(c *CDH, cmd *Cmdline, env LookupEnv) (*CDH, error) {
	fail := func(err error) (*CDH, error) { return nil, fmt.Errorf("resolve CDH config: %w", err) }
	envErr := func(key string, err error) (*CDH, error) {
		return fail(&KeyError{Source: SourceEnv, Key: key, Reason: err.Error()})
	}
	if !c.ImageSet {
		img, err := ImageFromCmdline(cmd)
		if err != nil {
			return fail(err)
		}
		c.Image = img
	}
	if v, ok := env.get(EnvAAKbcParams); ok {
		p, err := ParseKbcParams(v)
		if err != nil {
			return envErr(EnvAAKbcParams, err)
		}
		c.KBC.Name, c.KBC.URL = p.KBC, p.URI
	}
	if v, ok := env.get(EnvAASocket); ok {
		p, isUnix := strings.CutPrefix(v, "unix://")
		if !isUnix || !path.IsAbs(p) {
			return envErr(EnvAASocket, fmt.Errorf("%s is not a unix socket address, expected unix:///<absolute path>", quoteShort(v)))
		}
		c.AA.AASocket = v
	}
	if v, ok := env.get(EnvKBSCert); ok && c.KBC.KBSCert == "" {
		c.KBC.KBSCert = v
	}
	if v, ok := env.get(EnvSkipSealedSecretVerification); ok && v == "true" {
		c.SkipSealedSecretVerification = true
	}
	if v, ok := env.get(EnvCDHDefaultRegistryAuth); ok {
		if v == "" {
			return envErr(EnvCDHDefaultRegistryAuth, fmt.Errorf("is empty; unset it instead"))
		}
		c.Image.AuthenticatedRegistryCredentialsURI = v
	}
	if v, ok := env.get(EnvRustLog); ok {
		if err := checkLogLevel(v); err != nil {
			return envErr(EnvRustLog, err)
		}
		c.Log.Level = v
	}
	c.Credentials = append(c.Credentials, cmd.KBSResources...)
	if err := checkCredentialSet(c.Credentials); err != nil {
		return fail(&KeyError{Source: SourceCmdline, Key: KeyCDHKBSResources, Reason: err.Error()})
	}
	return c, nil
}
