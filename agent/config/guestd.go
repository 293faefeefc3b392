package config

import (
	"fmt"
	"net"
	"path"
)

// Defaults of guestd's own configuration file.
const (
	// DefaultGuestdConfig is where `guestd serve` and `guestd check` look
	// for their file when --config is not given; a missing file there means
	// the built-in defaults (DefaultGuestd).
	DefaultGuestdConfig = "/etc/guestd/guestd.toml"
	// DefaultREST is api-server-rest's default address.
	DefaultREST = "127.0.0.1:8006"
)

// Guestd is guestd's own configuration file: how the one `guestd serve`
// process runs, with the attestation agent's and the data hub's
// configuration in two tables whose contents are upstream's AA and CDH
// config files, key for key (read by the same code as ParseAA and
// ParseCDH, with the same checks and the same unknown-key reporting):
//
//	tee = "tdx"                  # default: detect
//	cmdline = "/proc/cmdline"    # where agent.* / cdh.* parameters are read
//	initdata = "/run/confidential-containers/initdata/initdata.toml" # default: that path if it exists
//	attestation_sock = "unix:///run/confidential-containers/attestation-agent/attestation-agent.sock"
//	cdh_sock = "unix:///run/confidential-containers/cdh.sock" # default: the CDH config's socket
//	rest = "127.0.0.1:8006"      # "" turns the REST API off
//	rest_features = "resource"   # resource, attestation, all; default: agent.guest_components_rest_api
//	grpc = ["vsock://any:50000"] # extra gRPC listeners: unix:///PATH, tcp://HOST:PORT, vsock://CID:PORT
//	expose_tee_key = false
//
//	[attestation_agent]          # upstream's AA config (token_configs, eventlog_config, log)
//	[confidential_data_hub]      # upstream's CDH config (socket, kbc, credentials, image, ...)
//
// The format follows the file name as for the AA and CDH files: ".json" is
// JSON, anything else TOML.
//
// Precedence, highest first: the daemon's command-line flags (-c and
// --cdh-config replace a whole table); initdata's aa.toml / cdh.toml when
// the initdata document has them, replacing the matching table whole, as
// kata starts upstream's components with -c on those files; the file's
// tables; without a table, the configuration upstream derives from the
// kernel command line (AAFromKbcParams, CDHFromKbcParams). The environment
// variables upstream reads (RUST_LOG, AA_KBC_PARAMS, ...) apply on top, as
// in ResolveAA and ResolveCDH. See Guestd.ResolveAA and Guestd.ResolveCDH.
//
// The listen addresses in grpc are checked by the daemon when it parses
// them (agent.ParseAddress), not here.
type Guestd struct {
	// Path is the file the configuration was read from; "" for
	// DefaultGuestd.
	Path            string
	Tee             string
	Cmdline         string
	Initdata        string
	AttestationSock string
	CDHSock         string
	REST            string
	RESTFeatures    RestAPI
	GRPC            []string
	ExposeTEEKey    bool
	// AA is [attestation_agent]; nil when the file has no such table.
	AA *AA
	// CDH is [confidential_data_hub]; nil when the file has no such table.
	CDH *CDH
	// Unknown lists the keys of the file guestd does not know, the tables'
	// included, as dotted paths (e.g. "attestation_agent.token_configs.x").
	Unknown []string
}

// DefaultGuestd is the configuration without a file: what the daemon's
// flags default to.
func DefaultGuestd() *Guestd {
	return &Guestd{
		Cmdline:         DefaultCmdlinePath,
		AttestationSock: DefaultAASocket,
		REST:            DefaultREST,
	}
}

// ParseGuestd parses guestd's configuration file; name is used for the
// format and in errors.
func ParseGuestd(name string, data []byte) (*Guestd, error) {
	tree, err := decodeTree(name, data)
	if err != nil {
		return nil, fmt.Errorf("parse guestd config: %w", err)
	}
	r := &reader{src: name}
	root := newTable(r, "", tree)
	g := DefaultGuestd()
	g.Path = name

	if s, ok := root.str("tee"); ok {
		g.Tee = s
	}
	if s, ok := root.str("cmdline"); ok {
		if !path.IsAbs(s) {
			r.fail("cmdline", "%s is not an absolute path", quoteShort(s))
		}
		g.Cmdline = s
	}
	if s, ok := root.str("initdata"); ok {
		if !path.IsAbs(s) {
			r.fail("initdata", "%s is not an absolute path", quoteShort(s))
		}
		g.Initdata = s
	}
	if s, ok := root.str("attestation_sock"); ok {
		checkSocket(root, "attestation_sock", s)
		g.AttestationSock = s
	}
	if s, ok := root.str("cdh_sock"); ok {
		if s != "" {
			checkSocket(root, "cdh_sock", s)
		}
		g.CDHSock = s
	}
	if s, ok := root.str("rest"); ok {
		if _, _, err := net.SplitHostPort(s); s != "" && err != nil {
			r.fail("rest", "%s is not HOST:PORT (\"\" turns the REST API off)", quoteShort(s))
		}
		g.REST = s
	}
	if s, ok := root.str("rest_features"); ok {
		switch f := RestAPI(s); f {
		case "", RestAPIResource, RestAPIAttestation, RestAPIAll:
			g.RESTFeatures = f
		default:
			r.fail("rest_features", "%s is not one of %s, %s, %s", quoteShort(s), RestAPIResource, RestAPIAttestation, RestAPIAll)
		}
	}
	if addrs, ok := root.strings("grpc"); ok {
		g.GRPC = addrs
	}
	if b, ok := root.boolean("expose_tee_key"); ok {
		g.ExposeTEEKey = b
	}
	if t, ok := root.sub("attestation_agent"); ok {
		g.AA = readAA(t)
	}
	if t, ok := root.sub("confidential_data_hub"); ok {
		g.CDH = readCDH(t)
	}
	if r.err != nil {
		return nil, fmt.Errorf("parse guestd config: %w", r.err)
	}
	g.Unknown = root.unknown()
	return g, nil
}

// LoadGuestd reads and parses guestd's configuration file at file.
func LoadGuestd(file string) (*Guestd, error) {
	data, err := readConfigFile(file)
	if err != nil {
		return nil, fmt.Errorf("load guestd config: %w", err)
	}
	return ParseGuestd(file, data)
}

// ResolveAA returns the AA configuration of the daemon when no -c flag
// names a file, and says where it came from: initdata's aa.toml when
// initdata (may be nil) has one, else the [attestation_agent] table, else
// AAFromKbcParams(cmd.KbcParams). RUST_LOG then applies as in the
// package-level ResolveAA. A nil cmd means an empty command line.
func (g *Guestd) ResolveAA(initdata *Initdata, cmd *Cmdline, env LookupEnv) (*AA, string, error) {
	if initdata != nil {
		a, err := initdata.AA()
		if err != nil {
			return nil, "", fmt.Errorf("resolve AA config: %w", err)
		}
		if a != nil {
			a, err = finishAA(a, env)
			return a, "initdata " + InitdataKeyAA, err
		}
	}
	if g.AA != nil {
		a := *g.AA
		res, err := finishAA(&a, env)
		return res, g.tableSource("attestation_agent"), err
	}
	if cmd == nil {
		cmd = DefaultCmdline()
	}
	a, err := finishAA(AAFromKbcParams(cmd.KbcParams), env)
	return a, kbcParamsSource(cmd), err
}

// ResolveCDH is ResolveAA for the data hub: initdata's cdh.toml, else the
// [confidential_data_hub] table, else CDHFromKbcParams(cmd.KbcParams);
// then the kernel command line and the environment as in the
// package-level ResolveCDH (the image section from the command line when
// the chosen configuration has none, cdh.kbs_resources, AA_KBC_PARAMS, ...).
func (g *Guestd) ResolveCDH(initdata *Initdata, cmd *Cmdline, env LookupEnv) (*CDH, string, error) {
	if cmd == nil {
		cmd = DefaultCmdline()
	}
	if initdata != nil {
		c, err := initdata.CDH()
		if err != nil {
			return nil, "", fmt.Errorf("resolve CDH config: %w", err)
		}
		if c != nil {
			c, err = finishCDH(c, cmd, env)
			return c, "initdata " + InitdataKeyCDH, err
		}
	}
	if g.CDH != nil {
		c := *g.CDH
		c.Credentials = append([]Credential(nil), g.CDH.Credentials...)
		res, err := finishCDH(&c, cmd, env)
		return res, g.tableSource("confidential_data_hub"), err
	}
	c, err := finishCDH(CDHFromKbcParams(cmd.KbcParams), cmd, env)
	return c, kbcParamsSource(cmd), err
}

func (g *Guestd) tableSource(table string) string {
	return g.Path + " [" + table + "]"
}

// kbcParamsSource names where aa_kbc_params came from.
func kbcParamsSource(cmd *Cmdline) string {
	if cmd.KbcParamsFrom == "" {
		return "default " + cmd.KbcParams.String()
	}
	return cmd.KbcParamsFrom
}
