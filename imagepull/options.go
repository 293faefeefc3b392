package imagepull

import (
	"log/slog"
	"time"

	"github.com/guestd/guestd/kbc"
)

// Options configures a Puller. The *URI fields name a KBS resource
// (kbs:///…) or an absolute path; an inline value is used when its URI is
// empty (the agent layer applies upstream's precedence before this).
type Options struct {
	// WorkDir holds the layer store, blob spool and generated registry
	// configuration (default /run/kata-containers/image).
	WorkDir string
	// KBC fetches kbs:// resources: the policy, keys, credentials, KEKs.
	KBC kbc.Client

	// PolicyURI / Policy give the containers-policy.json. RequirePolicy
	// (agent.enable_signature_verification) makes a pull fail when neither
	// is given or the policy cannot be obtained; without it and without a
	// policy, images are accepted unverified.
	PolicyURI     string
	Policy        []byte
	RequirePolicy bool
	// SigstoreConfigURI / SigstoreConfig give a registries.d YAML document
	// saying where signatures live (lookaside, sigstore attachments). By
	// default cosign-style sigstore attachments are used for every registry.
	SigstoreConfigURI string
	SigstoreConfig    []byte

	// AuthURI names a containers-auth.json with registry credentials; the
	// credentials are kept in memory.
	AuthURI string
	// RegistriesConfURI / RegistriesConf give a containers-registries.conf
	// (TOML): mirrors, blocked and insecure registries, short-name search.
	RegistriesConfURI string
	RegistriesConf    []byte
	// InsecureRegistries lists host[:port] reached over plain HTTP or with
	// TLS verification off (tests, local registries).
	InsecureRegistries []string
	// ExtraRootCAs are PEM certificates trusted for registries besides the
	// system roots.
	ExtraRootCAs [][]byte
	// HTTPSProxy, HTTPProxy and NoProxy configure the registry client's proxy.
	HTTPSProxy, HTTPProxy, NoProxy string

	// DecryptionKeys are private keys (PEM or DER, or kbs:// URIs / paths
	// fetched at New) for JWE-encrypted layers.
	DecryptionKeys []string

	// MaxLayerBytes caps the file content one layer may unpack (default
	// rootfs.DefaultMaxBytes): a decompression bomb stops there.
	MaxLayerBytes int64

	// MaxConcurrentLayers bounds the layer downloads of one image (default 3).
	MaxConcurrentLayers int
	// OS, Architecture and Variant select the instance of a manifest list
	// (default: the running platform).
	OS, Architecture, Variant string

	// Progress, if set, receives progress events. It is called from several
	// goroutines and must not block.
	Progress func(Event)
	// Logger receives logs; never secrets.
	Logger *slog.Logger
}

// Event reports pull progress.
type Event struct {
	Image  string
	Layer  int // index of the layer, 0-based; -1 for image-level events
	Layers int
	Digest string
	Phase  Phase
	Bytes  int64 // bytes of the blob fetched so far
	Size   int64 // the blob's size, -1 if unknown
	Time   time.Time
}

// Phase is a step of a pull.
type Phase string

// The phases of a pull.
const (
	PhaseResolve Phase = "resolve"
	PhaseVerify  Phase = "verify"
	PhaseFetch   Phase = "fetch"
	PhaseCached  Phase = "cached"
	PhaseApply   Phase = "apply"
	PhaseDone    Phase = "done"
	PhaseMounted Phase = "mounted"
)

// DefaultWorkDir is image-rs's default work directory.
const DefaultWorkDir = "/run/kata-containers/image"

const defaultLayerWorkers = 3
