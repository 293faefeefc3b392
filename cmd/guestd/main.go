package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/guestd/guestd/agent"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/attester/detect"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	code := dispatch(ctx, filepath.Base(os.Args[0]), os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv)
	stop()
	os.Exit(code)
}

const usage = `usage: guestd serve [flags] | guestd check [flags]

  serve   run the attestation agent and the confidential data hub (with the
          ocicrypt keyprovider) on kata's ttRPC sockets, optional gRPC
          listeners and the loopback REST API, sharing one attester and one
          KBS client; stops cleanly on SIGTERM
  check   load the configuration exactly as serve does (guestd's config
          file, kernel command line, AA and CDH config, initdata), detect
          the TEE, and print the effective configuration as JSON; exit 1 on
          any error

Both read ` + config.DefaultGuestdConfig + ` (or --config FILE) when it
exists; command-line flags win over it.
`

// envGRPC lists extra gRPC listen addresses for kata's multi-call names,
// whose flags kata fixes: comma-separated unix:///PATH, tcp://HOST:PORT or
// vsock://CID:PORT.
const envGRPC = "GUESTD_GRPC"

// dispatch runs guestd under the name it was started by: kata's launch plan
// starts /usr/local/bin/attestation-agent, confidential-data-hub and
// api-server-rest with upstream's flags; as guestd it takes subcommands.
func dispatch(ctx context.Context, name string, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	var f serveFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.cmdline, "cmdline", config.DefaultCmdlinePath, "kernel command line file")
	switch name {
	case "attestation-agent":
		f.roles = roles{aa: true}
		fs.StringVar(&f.aaSock, "attestation_sock", config.DefaultAASocket, "ttRPC socket")
		fs.StringVar(&f.aaConfig, "c", "", "config file")
		fs.StringVar(&f.aaConfig, "config-file", "", "config file")
		fs.StringVar(&f.initdata, "t", "", "initdata TOML")
		fs.StringVar(&f.initdata, "initdata-toml", "", "initdata TOML")
		fs.StringVar(&f.initDigest, "i", "", "initdata digest (base64), bound at start-up when no TOML is given")
		fs.StringVar(&f.initDigest, "initdata-digest", "", "initdata digest (base64), bound at start-up when no TOML is given")
	case "confidential-data-hub":
		f.roles = roles{cdh: true}
		fs.StringVar(&f.cdhConfig, "c", "", "config file")
		fs.StringVar(&f.cdhConfig, "config", "", "config file")
	case "api-server-rest":
		f.roles = roles{rest: true}
		fs.StringVar(&f.restFeatures, "features", "resource", "resource, attestation or all")
		fs.StringVar(&f.rest, "bind", config.DefaultREST, "address to listen on")
		fs.StringVar(&f.restCDHAddr, "cdh_addr", config.DefaultCDHSocket, "data hub ttRPC socket")
		fs.StringVar(&f.restAAAddr, "aa_addr", config.DefaultAASocket, "attestation agent ttRPC socket")
	default:
		return run(ctx, args, stdout, stderr, lookupEnv)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage of %s (guestd under kata's name, upstream's flags):\n", name)
		fs.PrintDefaults()
		if name != "api-server-rest" {
			fmt.Fprintf(stderr, "environment:\n  GUESTD_TEE   TEE override: %s\n  %s  also serve over gRPC at these comma-separated addresses (unix:///PATH, tcp://HOST:PORT, vsock://CID:PORT)\n",
				strings.Join(detect.Names(), ", "), envGRPC)
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if v, ok := lookupEnv(envGRPC); ok && name != "api-server-rest" {
		for a := range strings.SplitSeq(v, ",") {
			if a = strings.TrimSpace(a); a != "" {
				f.grpc = append(f.grpc, a)
			}
		}
		f.grpcFrom = envGRPC
	}
	if err := serveRoles(ctx, f, stderr, lookupEnv); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, lookupEnv func(string) (string, bool)) int {
	if len(args) > 0 && args[0] == "serve" {
		if err := serve(ctx, args[1:], stderr, lookupEnv); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			fmt.Fprintf(stderr, "guestd serve: %v\n", err)
			return 1
		}
		return 0
	}
	if len(args) == 0 || args[0] != "check" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	daemonFlags(fs, &f)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	eff, err := check(ctx, fs, f, lookupEnv, log)
	if err != nil {
		fmt.Fprintf(stderr, "guestd check: %v\n", err)
		return 1
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(eff); err != nil {
		fmt.Fprintf(stderr, "guestd check: %v\n", err)
		return 1
	}
	return 0
}

// effective is what `guestd check` prints.
type effective struct {
	// Config is guestd's own file, "" without one.
	Config  string          `json:"config"`
	Cmdline *config.Cmdline `json:"cmdline"`
	AA      *config.AA      `json:"aa"`
	// AAFrom and CDHFrom say where the AA and CDH configuration came
	// from (a file, a table of guestd's file, initdata, aa_kbc_params).
	AAFrom   string        `json:"aa_from"`
	CDH      *config.CDH   `json:"cdh"`
	CDHFrom  string        `json:"cdh_from"`
	Initdata *initdataInfo `json:"initdata,omitempty"`
	Serve    serveInfo     `json:"serve"`
	Tee      string        `json:"tee"`
}

type initdataInfo struct {
	File      string `json:"file"`
	Version   string `json:"version"`
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
}

// serveInfo is what guestd serve listens on.
type serveInfo struct {
	AttestationSock string   `json:"attestation_sock"`
	CDHSock         string   `json:"cdh_sock"`
	REST            string   `json:"rest"` // "" when off
	RESTFeatures    string   `json:"rest_features"`
	GRPC            []string `json:"grpc"`
	ExposeTEEKey    bool     `json:"expose_tee_key"`
}

func check(ctx context.Context, fs *flag.FlagSet, f serveFlags, lookupEnv func(string) (string, bool), log *slog.Logger) (*effective, error) {
	if err := f.withFile(fs); err != nil {
		return nil, err
	}
	cfg, err := loadConfig(f, lookupEnv, log)
	if err != nil {
		return nil, err
	}
	eff := &effective{Config: f.guestd.Path, Cmdline: cfg.cmd, AA: cfg.aa, AAFrom: cfg.aaFrom, CDH: cfg.cdh, CDHFrom: cfg.cdhFrom,
		Serve: serveInfo{AttestationSock: f.aaSock, CDHSock: cfg.cdhSock(f), REST: f.rest, RESTFeatures: cfg.restFeatures(f),
			GRPC: f.grpc, ExposeTEEKey: f.exposeTEEKey}}
	if d := cfg.initdata; d != nil {
		eff.Initdata = &initdataInfo{File: cfg.initFile, Version: d.Version, Algorithm: d.Algorithm, Digest: fmt.Sprintf("%x", d.Digest)}
	}
	if f.tee != "" {
		if !detect.Present(f.tee, detect.Options{}) {
			return nil, fmt.Errorf("TEE %s: not present on this machine", f.tee)
		}
		eff.Tee = f.tee
		return eff, nil
	}
	eff.Tee = "sample"
	for _, n := range detect.Names() {
		if detect.Present(n, detect.Options{}) {
			eff.Tee = n
			break
		}
	}
	if eff.Tee == "sample" {
		log.Warn("no TEE detected: guestd would use the sample attester, whose evidence proves nothing")
	}
	return eff, nil
}

// checkAddresses parses every listen address before anything listens, so
// that check reports a bad one and serve fails before binding anything.
func checkAddresses(f serveFlags) error {
	from := f.grpcFrom
	if from == "" {
		from = "grpc"
	}
	for _, a := range f.grpc {
		if _, err := agent.ParseAddress(a); err != nil {
			return fmt.Errorf("%s: %w", from, err)
		}
	}
	for _, a := range []string{f.aaSock, f.cdhSock} {
		if a == "" {
			continue
		}
		if addr, err := agent.ParseAddress(a); err != nil {
			return err
		} else if addr.Network != "unix" {
			return fmt.Errorf("ttRPC socket %s: ttRPC needs a unix:// socket", a)
		}
	}
	return nil
}
