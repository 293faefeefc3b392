package config

import (
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"
)

// DefaultCmdlinePath is where the kernel command line is read from.
const DefaultCmdlinePath = "/proc/cmdline"

// maxCmdlineSize bounds how much of the (injectable) command line file is
// read. Real kernel command lines are a few KiB at most.
const maxCmdlineSize = 1 << 20

// Kernel command line keys guestd reads. Other agent.* keys belong to
// kata-agent (agent.log, agent.debug_console, ...) and are ignored.
const (
	KeyAAKbcParams                 = "agent.aa_kbc_params"
	KeyHTTPSProxy                  = "agent.https_proxy"
	KeyHTTPProxy                   = "agent.http_proxy"
	KeyNoProxy                     = "agent.no_proxy"
	KeyImageRegistryAuth           = "agent.image_registry_auth"
	KeyEnableSignatureVerification = "agent.enable_signature_verification"
	KeyImagePolicyFile             = "agent.image_policy_file"
	KeyGuestComponentsProcs        = "agent.guest_components_procs"
	KeyGuestComponentsRestAPI      = "agent.guest_components_rest_api"
	KeyCDHAPITimeout               = "agent.cdh_api_timeout"
	KeyImagePullTimeout            = "agent.image_pull_timeout"
	KeyLaunchProcessTimeout        = "agent.launch_process_timeout"
	KeySecureStorageIntegrity      = "agent.secure_storage_integrity"
	KeyCDHKBSResources             = "cdh.kbs_resources"
)

// Environment variables (guest-components.md §5) that change configuration.
const (
	EnvAAKbcParams                  = "AA_KBC_PARAMS"
	EnvAASocket                     = "AA_SOCKET"
	EnvKBSCert                      = "KBS_CERT"
	EnvSkipSealedSecretVerification = "SKIP_SEALED_SECRET_VERIFICATION"
	EnvCDHDefaultRegistryAuth       = "CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS"
	EnvRustLog                      = "RUST_LOG"
)

// Defaults of the kata-agent timeouts (kata src/agent/src/config.rs).
const (
	DefaultCDHAPITimeout        = 50 * time.Second
	DefaultImagePullTimeout     = 1200 * time.Second
	DefaultLaunchProcessTimeout = 6 * time.Second
)

// LookupEnv looks up an environment variable; os.LookupEnv fits. A nil
// LookupEnv means an empty environment.
type LookupEnv func(key string) (string, bool)

func (f LookupEnv) get(key string) (string, bool) {
	if f == nil {
		return "", false
	}
	return f(key)
}

// KBC names guestd accepts in aa_kbc_params and the CDH [kbc] section.
// Upstream CDH knows cc_kbc and offline_fs_kbc; offline_sev_kbc is the
// historical name (removed upstream) of the KBC that reads secrets the host
// injected into an SEV guest at launch, which guestd keeps.
const (
	KBCCC         = "cc_kbc"
	KBCOfflineFS  = "offline_fs_kbc"
	KBCOfflineSEV = "offline_sev_kbc"
)

// KbcParams is the value of aa_kbc_params: which KBC to use and its URI.
type KbcParams struct {
	KBC string
	URI string
}

// DefaultKbcParams is what upstream uses when neither AA_KBC_PARAMS nor
// agent.aa_kbc_params is given: offline_fs_kbc with an empty URI (upstream
// logs this as "offline_fs_kbc::null"; the URI is ignored by that KBC).
func DefaultKbcParams() KbcParams {
	return KbcParams{KBC: KBCOfflineFS}
}

// String renders p in the <kbc>::<uri> form.
func (p KbcParams) String() string { return p.KBC + "::" + p.URI }

// ParseKbcParams parses "<kbc>::<uri>". The value must contain "::" exactly
// once, the KBC must be one guestd supports and cc_kbc needs an http(s) URL
// of the KBS. Errors do not name a key; callers add it.
func ParseKbcParams(s string) (KbcParams, error) {
	parts := strings.Split(s, "::")
	if len(parts) != 2 {
		return KbcParams{}, fmt.Errorf("%s has %d \"::\" separators, expected the form <kbc>::<uri>", quoteShort(s), len(parts)-1)
	}
	p := KbcParams{KBC: parts[0], URI: parts[1]}
	if err := checkKBC(p.KBC, p.URI); err != nil {
		return KbcParams{}, err
	}
	return p, nil
}

func checkKBC(name, uri string) error {
	switch name {
	case KBCCC:
		if err := checkHTTPURL(uri); err != nil {
			return fmt.Errorf("cc_kbc needs the KBS address: %w", err)
		}
		return nil
	case KBCOfflineFS, KBCOfflineSEV:
		return nil
	case "":
		return fmt.Errorf("the KBC name is empty, expected one of %s, %s, %s", KBCCC, KBCOfflineFS, KBCOfflineSEV)
	default:
		return fmt.Errorf("unsupported KBC %s, expected one of %s, %s, %s", quoteShort(name), KBCCC, KBCOfflineFS, KBCOfflineSEV)
	}
}

// checkHTTPURL accepts an absolute http or https URL with a host.
func checkHTTPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s is not an http(s) URL", quoteShort(s))
	}
	return nil
}

// Procs is agent.guest_components_procs: which guest components kata-agent
// (here guestd) starts. Each level implies the ones below it.
type Procs string

const (
	ProcsNone                Procs = "none"
	ProcsAttestationAgent    Procs = "attestation-agent"
	ProcsConfidentialDataHub Procs = "confidential-data-hub"
	ProcsAPIServerRest       Procs = "api-server-rest"
)

// StartsAA reports whether the attestation agent runs.
func (p Procs) StartsAA() bool { return p != ProcsNone }

// StartsCDH reports whether the confidential data hub runs.
func (p Procs) StartsCDH() bool { return p == ProcsConfidentialDataHub || p == ProcsAPIServerRest }

// StartsAPIServerRest reports whether the REST API server runs.
func (p Procs) StartsAPIServerRest() bool { return p == ProcsAPIServerRest }

// RestAPI is agent.guest_components_rest_api: the feature set passed to
// api-server-rest as --features.
type RestAPI string

const (
	RestAPIAll         RestAPI = "all"
	RestAPIAttestation RestAPI = "attestation"
	RestAPIResource    RestAPI = "resource"
)

// Credential is a KBS resource CDH fetches at start-up and writes to Path
// ([[credentials]] in the CDH file, or cdh.kbs_resources).
type Credential struct {
	ResourceURI string
	Path        string
}

// CredentialDir is the only directory credentials may be written under.
const CredentialDir = "/run/confidential-containers/cdh/kbs/"

// Cmdline holds the kernel command line values guestd uses.
type Cmdline struct {
	// KbcParams is the effective aa_kbc_params: AA_KBC_PARAMS when set
	// (LoadCmdline only), else agent.aa_kbc_params, else DefaultKbcParams.
	KbcParams KbcParams
	// KbcParamsFrom says where KbcParams came from: EnvAAKbcParams,
	// KeyAAKbcParams, or "" for the default.
	KbcParamsFrom string

	HTTPSProxy string // agent.https_proxy
	HTTPProxy  string // agent.http_proxy
	NoProxy    string // agent.no_proxy
	// ImageRegistryAuth is agent.image_registry_auth, a resource URI or path
	// of a registry auth.json.
	ImageRegistryAuth string
	// EnableSignatureVerification gates ImagePolicyFile (image-rs only uses
	// the policy file when this is true).
	EnableSignatureVerification bool
	ImagePolicyFile             string // agent.image_policy_file

	GuestComponentsProcs   Procs
	GuestComponentsRestAPI RestAPI
	CDHAPITimeout          time.Duration
	ImagePullTimeout       time.Duration
	LaunchProcessTimeout   time.Duration
	// SecureStorageIntegrity defaults to true, as in kata-agent.
	SecureStorageIntegrity bool

	// KBSResources is cdh.kbs_resources, appended to CDH's credentials.
	KBSResources []Credential
}

// DefaultCmdline is the configuration of an empty command line.
func DefaultCmdline() *Cmdline {
	return &Cmdline{
		KbcParams:              DefaultKbcParams(),
		GuestComponentsProcs:   ProcsAPIServerRest,
		GuestComponentsRestAPI: RestAPIResource,
		CDHAPITimeout:          DefaultCDHAPITimeout,
		ImagePullTimeout:       DefaultImagePullTimeout,
		LaunchProcessTimeout:   DefaultLaunchProcessTimeout,
		SecureStorageIntegrity: true,
	}
}

// ParseCmdline parses a kernel command line. Tokens are split on ASCII
// whitespace (no quote handling, like upstream) and each key=value at the
// first "=". Keys other than the Key* constants are ignored.
//
// Stricter than upstream, on purpose:
//   - A known key without "=" or with an empty value is an error.
//   - A known key given twice with different values is an error. Upstream
//     disagrees with itself here (AA and CDH take the first
//     agent.aa_kbc_params and cdh.kbs_resources, image-rs and kata-agent
//     the last of their keys), so any single rule would silently differ
//     from one of them. Repeating the same value is accepted.
//   - Timeouts must be whole seconds >= 1 (kata ignores 0 and keeps the
//     default) and booleans must be spelled as upstream spells them: kata's
//     agent.secure_storage_integrity takes true, false or an unsigned
//     integer (0 is false); image-rs's agent.enable_signature_verification
//     takes only true or false. Upstream reads anything else as false.
func ParseCmdline(cmdline string) (*Cmdline, error) {
	return parseCmdline(SourceCmdline, cmdline)
}

func parseCmdline(src, cmdline string) (*Cmdline, error) {
	c := DefaultCmdline()
	seen := map[string]string{}
	for _, tok := range strings.FieldsFunc(cmdline, isASCIISpace) {
		key, val, hasEq := strings.Cut(tok, "=")
		if !isCmdlineKey(key) {
			continue
		}
		if !hasEq {
			return nil, &KeyError{Source: src, Key: key, Reason: "has no value, expected " + key + "=<value>"}
		}
		if prev, dup := seen[key]; dup {
			if prev != val {
				return nil, &KeyError{Source: src, Key: key, Reason: fmt.Sprintf("given twice with different values %s and %s", quoteShort(prev), quoteShort(val))}
			}
			continue
		}
		seen[key] = val
		if val == "" {
			return nil, &KeyError{Source: src, Key: key, Reason: "has an empty value"}
		}
		if reason := c.set(key, val); reason != "" {
			return nil, &KeyError{Source: src, Key: key, Reason: reason}
		}
	}
	return c, nil
}

// isASCIISpace matches Rust's char::is_ascii_whitespace, which upstream's
// split_ascii_whitespace uses (note: not \v).
func isASCIISpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\f' || r == '\r'
}

func isCmdlineKey(k string) bool {
	switch k {
	case KeyAAKbcParams, KeyHTTPSProxy, KeyHTTPProxy, KeyNoProxy, KeyImageRegistryAuth,
		KeyEnableSignatureVerification, KeyImagePolicyFile, KeyGuestComponentsProcs,
		KeyGuestComponentsRestAPI, KeyCDHAPITimeout, KeyImagePullTimeout,
		KeyLaunchProcessTimeout, KeySecureStorageIntegrity, KeyCDHKBSResources:
		return true
	}
	return false
}

// set stores one value; it returns why the value is rejected, or "".
func (c *Cmdline) set(key, val string) string {
	switch key {
	case KeyAAKbcParams:
		p, err := ParseKbcParams(val)
		if err != nil {
			return err.Error()
		}
		c.KbcParams, c.KbcParamsFrom = p, KeyAAKbcParams
	case KeyHTTPSProxy:
		// kata-agent parses this one as a URL and fails to start otherwise.
		u, err := url.Parse(val)
		if err != nil || u.Scheme == "" {
			return quoteShort(val) + " is not a URL, expected e.g. http://proxy:3128"
		}
		c.HTTPSProxy = val
	case KeyHTTPProxy:
		c.HTTPProxy = val
	case KeyNoProxy:
		c.NoProxy = val
	case KeyImageRegistryAuth:
		c.ImageRegistryAuth = val
	case KeyImagePolicyFile:
		c.ImagePolicyFile = val
	case KeyEnableSignatureVerification:
		switch val {
		case "true":
			c.EnableSignatureVerification = true
		case "false":
			c.EnableSignatureVerification = false
		default:
			return quoteShort(val) + " is not a boolean, expected true or false"
		}
	case KeySecureStorageIntegrity:
		b, ok := kataBool(val)
		if !ok {
			return quoteShort(val) + " is not a boolean, expected true, false or an unsigned integer"
		}
		c.SecureStorageIntegrity = b
	case KeyGuestComponentsProcs:
		switch p := Procs(val); p {
		case ProcsNone, ProcsAttestationAgent, ProcsConfidentialDataHub, ProcsAPIServerRest:
			c.GuestComponentsProcs = p
		default:
			return fmt.Sprintf("%s is not one of %s, %s, %s, %s", quoteShort(val), ProcsNone, ProcsAttestationAgent, ProcsConfidentialDataHub, ProcsAPIServerRest)
		}
	case KeyGuestComponentsRestAPI:
		switch f := RestAPI(val); f {
		case RestAPIAll, RestAPIAttestation, RestAPIResource:
			c.GuestComponentsRestAPI = f
		default:
			return fmt.Sprintf("%s is not one of %s, %s, %s", quoteShort(val), RestAPIAll, RestAPIAttestation, RestAPIResource)
		}
	case KeyCDHAPITimeout, KeyImagePullTimeout, KeyLaunchProcessTimeout:
		d, reason := parseSeconds(val)
		if reason != "" {
			return reason
		}
		switch key {
		case KeyCDHAPITimeout:
			c.CDHAPITimeout = d
		case KeyImagePullTimeout:
			c.ImagePullTimeout = d
		default:
			c.LaunchProcessTimeout = d
		}
	case KeyCDHKBSResources:
		creds, reason := parseKBSResources(val)
		if reason != "" {
			return reason
		}
		c.KBSResources = creds
	}
	return ""
}

// kataBool is kata-agent's get_bool_value without its fallback to false:
// "true", "false", or an unsigned integer where 0 is false.
func kataBool(s string) (bool, bool) {
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || !isDigits(s) {
		return false, false
	}
	return n != 0, true
}

// parseSeconds reads a kata timeout: a whole number of seconds, at least 1.
func parseSeconds(s string) (time.Duration, string) {
	if !isDigits(s) {
		return 0, quoteShort(s) + " is not a whole number of seconds"
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n > math.MaxInt64/uint64(time.Second) {
		return 0, quoteShort(s) + " seconds is too large"
	}
	if n == 0 {
		return 0, "0 is not a valid timeout, expected at least 1 second"
	}
	return time.Duration(n) * time.Second, ""
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseKBSResources reads "<uri>::<path>,<uri>::<path>". Empty entries are
// skipped as upstream does; an entry without "::" is an error (upstream
// drops it silently).
func parseKBSResources(s string) ([]Credential, string) {
	var out []Credential
	for _, e := range strings.Split(s, ",") {
		if e == "" {
			continue
		}
		uri, p, ok := strings.Cut(e, "::")
		if !ok {
			return nil, fmt.Sprintf("entry %s is not of the form <resource-uri>::<path>", quoteShort(e))
		}
		if err := checkResourceURI(uri); err != nil {
			return nil, fmt.Sprintf("entry %s: %v", quoteShort(e), err)
		}
		if err := checkCredentialPath(p); err != nil {
			return nil, fmt.Sprintf("entry %s: %v", quoteShort(e), err)
		}
		out = append(out, Credential{ResourceURI: uri, Path: p})
	}
	return out, ""
}

// checkResourceURI accepts kbs://[host]/<seg>/... and kbs+<plugin>://...
// with at least one non-empty path segment.
func checkResourceURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s is not a resource URI, expected kbs:///<repo>/<type>/<tag>", quoteShort(s))
	}
	plugin, isPlugin := strings.CutPrefix(u.Scheme, "kbs+")
	if u.Scheme != "kbs" && (!isPlugin || plugin == "") {
		return fmt.Errorf("%s is not a resource URI, expected scheme kbs or kbs+<plugin>", quoteShort(s))
	}
	if strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("%s has no resource path, expected kbs:///<repo>/<type>/<tag>", quoteShort(s))
	}
	return nil
}

// checkCredentialPath enforces upstream's rule (CDH is_path_valid) a little
// more tightly: the path must be clean, absolute and strictly under
// CredentialDir (upstream only checks the prefix without the trailing slash
// and rejects "." and ".." segments).
func checkCredentialPath(p string) error {
	// path.Clean(p) == p also rules out ".", ".." and empty segments and
	// a trailing slash.
	if !strings.HasPrefix(p, CredentialDir) || path.Clean(p) != p {
		return fmt.Errorf("path %s must be a clean path under %s", quoteShort(p), CredentialDir)
	}
	return nil
}

// LoadCmdline reads the kernel command line from path (DefaultCmdlinePath
// when empty) and applies AA_KBC_PARAMS from env, which wins over
// agent.aa_kbc_params as in upstream AA and CDH. A malformed
// agent.aa_kbc_params is still an error when the variable is set.
func LoadCmdline(path string, env LookupEnv) (*Cmdline, error) {
	if path == "" {
		path = DefaultCmdlinePath
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel command line: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCmdlineSize+1))
	if err != nil {
		return nil, fmt.Errorf("read kernel command line %s: %w", path, err)
	}
	if len(data) > maxCmdlineSize {
		return nil, fmt.Errorf("read kernel command line %s: larger than %d bytes", path, maxCmdlineSize)
	}
	c, err := parseCmdline(path, string(data))
	if err != nil {
		return nil, fmt.Errorf("parse kernel command line: %w", err)
	}
	if v, ok := env.get(EnvAAKbcParams); ok {
		p, err := ParseKbcParams(v)
		if err != nil {
			return nil, fmt.Errorf("load kernel command line: %w", &KeyError{Source: SourceEnv, Key: EnvAAKbcParams, Reason: err.Error()})
		}
		c.KbcParams, c.KbcParamsFrom = p, EnvAAKbcParams
	}
	return c, nil
}
