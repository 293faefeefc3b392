package config

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Paths and defaults of the attestation agent.
const (
	DefaultAASocket = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
	// DefaultInitPCR is upstream's default register for the INIT eventlog
	// entry and for ExtendRuntimeMeasurement without an index.
	DefaultInitPCR  = 17
	DefaultLogLevel = "info"
	// maxConfigSize bounds config files read from disk.
	maxConfigSize = 4 << 20
)

// TeeKeyAlgorithm is token_configs.kbs.tee_key_algorithm: the kind of
// ephemeral TEE key the AA offers the KBS.
type TeeKeyAlgorithm string

const (
	TeeKeyECDHP256   TeeKeyAlgorithm = "ECDH-ES+A256KW-P256" // the default
	TeeKeyECDHP521   TeeKeyAlgorithm = "ECDH-ES+A256KW-P521"
	TeeKeyRSAOAEP256 TeeKeyAlgorithm = "RSA-OAEP-256"
)

// AA is the attestation agent's configuration.
type AA struct {
	TokenConfigs   TokenConfigs
	EventlogConfig EventlogConfig
	Log            Log
	// Unknown lists keys of the file guestd does not know, as dotted
	// paths, for the caller to log.
	Unknown []string
}

// TokenConfigs is [token_configs]; a nil member means the token type is
// not configured.
type TokenConfigs struct {
	KBS    *KBSToken    // [token_configs.kbs]
	CoCoAS *CoCoASToken // [token_configs.coco_as]
}

// KBSToken is [token_configs.kbs].
type KBSToken struct {
	URL string // required, http(s)
	// Cert is an optional extra root CA (PEM) for the KBS. It is not checked
	// here; upstream rejects a bad one only when connecting.
	Cert            string
	TeeKeyAlgorithm TeeKeyAlgorithm
}

// CoCoASToken is [token_configs.coco_as].
type CoCoASToken struct {
	URL string // required, http(s)
}

// EventlogConfig is [eventlog_config].
type EventlogConfig struct {
	InitPCR        uint32 // default DefaultInitPCR
	EnableEventlog bool   // default false
}

// Log is [log].
type Log struct {
	// Level is upstream's tracing filter string. See SlogLevel.
	Level string
}

// DefaultAA is the configuration without a file and without a KBS.
func DefaultAA() *AA {
	return &AA{
		EventlogConfig: EventlogConfig{InitPCR: DefaultInitPCR},
		Log:            Log{Level: DefaultLogLevel},
	}
}

// AAFromKbcParams is the configuration upstream uses when AA is started
// without -c: defaults, plus token_configs.kbs pointing at the KBS when the
// KBC is cc_kbc (and no KBS token config otherwise).
func AAFromKbcParams(p KbcParams) *AA {
	a := DefaultAA()
	if p.KBC == KBCCC {
		a.TokenConfigs.KBS = &KBSToken{URL: p.URI, TeeKeyAlgorithm: TeeKeyECDHP256}
	}
	return a
}

// ParseAA parses an AA config file. name is used for the format (".json"
// means JSON, anything else TOML) and in errors.
//
// Upstream's config crate converts between types loosely (e.g. init_pcr =
// "17"); guestd requires the native type.
func ParseAA(name string, data []byte) (*AA, error) {
	tree, err := decodeTree(name, data)
	if err != nil {
		return nil, fmt.Errorf("parse AA config: %w", err)
	}
	r := &reader{src: name}
	root := newTable(r, "", tree)
	a := readAA(root)
	if r.err != nil {
		return nil, fmt.Errorf("parse AA config: %w", r.err)
	}
	a.Unknown = root.unknown()
	return a, nil
}

// readAA reads the AA schema from root, the whole file or a table of
// guestd's own file; errors go to root's reader.
func readAA(root *table) *AA {
	r := root.r
	a := DefaultAA()

	if tc, ok := root.sub("token_configs"); ok {
		if kt, ok := tc.sub("kbs"); ok {
			k := &KBSToken{TeeKeyAlgorithm: TeeKeyECDHP256}
			if u, ok := kt.str("url"); ok {
				if err := checkHTTPURL(u); err != nil {
					r.fail(kt.keyPath("url"), "%v", err)
				}
				k.URL = u
			} else {
				kt.missing("url")
			}
			if c, ok := kt.str("cert"); ok {
				k.Cert = c
			}
			if alg, ok := kt.str("tee_key_algorithm"); ok {
				switch t := TeeKeyAlgorithm(alg); t {
				case TeeKeyECDHP256, TeeKeyECDHP521, TeeKeyRSAOAEP256:
					k.TeeKeyAlgorithm = t
				default:
					r.fail(kt.keyPath("tee_key_algorithm"), "%s is not one of %s, %s, %s", quoteShort(alg), TeeKeyECDHP256, TeeKeyECDHP521, TeeKeyRSAOAEP256)
				}
			}
			a.TokenConfigs.KBS = k
		}
		if ct, ok := tc.sub("coco_as"); ok {
			c := &CoCoASToken{}
			if u, ok := ct.str("url"); ok {
				if err := checkHTTPURL(u); err != nil {
					r.fail(ct.keyPath("url"), "%v", err)
				}
				c.URL = u
			} else {
				ct.missing("url")
			}
			a.TokenConfigs.CoCoAS = c
		}
	}
	if et, ok := root.sub("eventlog_config"); ok {
		if n, ok := et.integer("init_pcr"); ok {
			// The eventlog records the register as a u32 and TPM PCRs stop
			// at 23; upstream takes any u64.
			if n < 0 || n > 23 {
				r.fail(et.keyPath("init_pcr"), "%d is not a PCR index, expected 0 to 23", n)
			}
			a.EventlogConfig.InitPCR = uint32(n)
		}
		if b, ok := et.boolean("enable_eventlog"); ok {
			a.EventlogConfig.EnableEventlog = b
		}
	}
	readLog(root, &a.Log)
	return a
}

func readLog(root *table, l *Log) {
	lt, ok := root.sub("log")
	if !ok {
		return
	}
	if lv, ok := lt.str("level"); ok {
		if err := checkLogLevel(lv); err != nil {
			root.r.fail(lt.keyPath("level"), "%v", err)
		}
		l.Level = lv
	}
}

// LoadAA reads and parses the AA config file at path.
func LoadAA(path string) (*AA, error) {
	data, err := readConfigFile(path)
	if err != nil {
		return nil, fmt.Errorf("load AA config: %w", err)
	}
	return ParseAA(path, data)
}

// ResolveAA returns the configuration the AA runs with, as upstream's
// ttrpc-aa builds it: the file at path when path is not empty (aa_kbc_params
// is then not consulted), otherwise AAFromKbcParams(cmd.KbcParams). RUST_LOG
// from env replaces the log level. A nil cmd means an empty command line.
func ResolveAA(path string, cmd *Cmdline, env LookupEnv) (*AA, error) {
	var a *AA
	if path != "" {
		var err error
		if a, err = LoadAA(path); err != nil {
			return nil, err
		}
	} else {
		if cmd == nil {
			cmd = DefaultCmdline()
		}
		a = AAFromKbcParams(cmd.KbcParams)
	}
	return finishAA(a, env)
}

// finishAA applies the environment to a loaded or derived configuration.
func finishAA(a *AA, env LookupEnv) (*AA, error) {
	if v, ok := env.get(EnvRustLog); ok {
		if err := checkLogLevel(v); err != nil {
			return nil, fmt.Errorf("resolve AA config: %w", &KeyError{Source: SourceEnv, Key: EnvRustLog, Reason: err.Error()})
		}
		a.Log.Level = v
	}
	return a, nil
}

// readConfigFile reads a config file, refusing huge ones.
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, maxConfigSize)
	}
	return data, nil
}

// levelOf maps a level name of [log] level or RUST_LOG to slog.
func levelOf(name string) (slog.Level, bool) {
	switch strings.ToLower(name) {
	case "trace":
		return slog.LevelDebug - 4, true
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	case "off":
		return slog.LevelError + 64, true
	}
	return 0, false
}

// checkLogLevel accepts a comma-separated list of directives, each a level
// (trace, debug, info, warn, error, off) or target=level, the subset of
// upstream's tracing EnvFilter syntax that means something to guestd.
// Upstream also accepts a bare target name (enabling everything for it);
// guestd rejects that because it is nearly always a misspelt level.
func checkLogLevel(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("empty log level, expected trace, debug, info, warn, error or off")
	}
	for _, d := range strings.Split(s, ",") {
		d = strings.TrimSpace(d)
		if d == "" {
			continue
		}
		lv := d
		if _, after, ok := strings.Cut(d, "="); ok {
			lv = after
		}
		if _, ok := levelOf(lv); !ok {
			return fmt.Errorf("%s is not a log level, expected trace, debug, info, warn, error or off (optionally target=level)", quoteShort(d))
		}
	}
	return nil
}

// SlogLevel returns the global level of l: the last directive without a
// target, or info when there is none or Level is invalid.
func (l Log) SlogLevel() slog.Level {
	lvl := slog.LevelInfo
	for _, d := range strings.Split(l.Level, ",") {
		d = strings.TrimSpace(d)
		if strings.Contains(d, "=") {
			continue
		}
		if v, ok := levelOf(d); ok {
			lvl = v
		}
	}
	return lvl
}
