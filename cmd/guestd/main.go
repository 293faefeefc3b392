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
	"syscall"

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
  check   load the configuration exactly as the daemon does (kernel command
          line, AA and CDH config files, initdata), detect the TEE, and print
          the effective configuration as JSON; exit 1 on any error
`

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
		fs.StringVar(&f.rest, "bind", "127.0.0.1:8006", "address to listen on")
		fs.StringVar(&f.restCDHAddr, "cdh_addr", config.DefaultCDHSocket, "data hub ttRPC socket")
		fs.StringVar(&f.restAAAddr, "aa_addr", config.DefaultAASocket, "attestation agent ttRPC socket")
	default:
		return run(ctx, args, stdout, stderr, lookupEnv)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
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
	aaFile := fs.String("c", "", "attestation agent config file (TOML, or JSON by extension)")
	cdhFile := fs.String("cdh-config", "", "confidential data hub config file")
	initdata := fs.String("initdata-toml", "", "initdata TOML kata wrote (e.g. /run/confidential-containers/initdata/initdata.toml)")
	cmdline := fs.String("cmdline", config.DefaultCmdlinePath, "kernel command line file")
	tee := fs.String("tee", "", "TEE override: "+fmt.Sprint(detect.Names()))
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	eff, err := check(ctx, *aaFile, *cdhFile, *initdata, *cmdline, *tee, lookupEnv, log)
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
	Cmdline  *config.Cmdline `json:"cmdline"`
	AA       *config.AA      `json:"aa"`
	CDH      *config.CDH     `json:"cdh"`
	Initdata *initdataInfo   `json:"initdata,omitempty"`
	Tee      string          `json:"tee"`
}

type initdataInfo struct {
	Version   string `json:"version"`
	Algorithm string `json:"algorithm"`
	Digest    string `json:"digest"`
}

func check(ctx context.Context, aaFile, cdhFile, initdataFile, cmdlineFile, tee string, lookupEnv func(string) (string, bool), log *slog.Logger) (*effective, error) {
	cmd, err := config.LoadCmdline(cmdlineFile, lookupEnv)
	if err != nil {
		return nil, err
	}
	eff := &effective{Cmdline: cmd}
	if initdataFile != "" {
		d, err := config.LoadInitdata(initdataFile)
		if err != nil {
			return nil, err
		}
		eff.Initdata = &initdataInfo{Version: d.Version, Algorithm: d.Algorithm, Digest: fmt.Sprintf("%x", d.Digest)}
		for _, k := range d.Unknown {
			log.Warn("unknown initdata key", "file", initdataFile, "key", k)
		}
	}
	if eff.AA, err = config.ResolveAA(aaFile, cmd, lookupEnv); err != nil {
		return nil, err
	}
	for _, k := range eff.AA.Unknown {
		log.Warn("unknown key in the AA config", "file", aaFile, "key", k)
	}
	if eff.CDH, err = config.ResolveCDH(cdhFile, cmd, lookupEnv); err != nil {
		return nil, err
	}
	for _, k := range eff.CDH.Unknown {
		log.Warn("unknown key in the CDH config", "file", cdhFile, "key", k)
	}
	if tee != "" {
		if !detect.Present(tee, detect.Options{}) {
			return nil, fmt.Errorf("--tee %s: that TEE is not present on this machine", tee)
		}
		eff.Tee = tee
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
