package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"

	"github.com/guestd/guestd/agent"
	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/rest"
	"github.com/guestd/guestd/agent/securemount"
	"github.com/guestd/guestd/agent/service"
	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/detect"
	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/internal/atomicfile"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/sealed"
	"github.com/guestd/guestd/kbc/teekey"
)

// defaultInitdata is where kata writes the initdata document.
const defaultInitdata = config.InitdataTOMLPath

// roles are the services one process serves: all of them for `guestd
// serve`, one each under kata's multi-call names.
type roles struct{ aa, cdh, rest bool }

type serveFlags struct {
	roles                                       roles
	restAAAddr, restCDHAddr                     string // REST-only: the AA and CDH to call over ttRPC
	initDigest                                  string // attestation-agent -i: base64 initdata digest
	aaConfig, cdhConfig, initdata, cmdline, tee string
	aaSock, cdhSock, rest, restFeatures         string
	grpc                                        []string
	grpcFrom                                    string // where grpc came from, for errors: "" (flags, file) or envGRPC
	exposeTEEKey                                bool
	// config is --config; guestd is the file it names (or the default
	// file, or config.DefaultGuestd), nil under kata's names, which follow
	// upstream's rules only.
	config string
	guestd *config.Guestd
}

// daemonFlags defines the flags guestd serve and guestd check share. Their
// defaults are config.DefaultGuestd's; guestd's config file replaces the
// defaults of the flags not given (withFile).
func daemonFlags(fs *flag.FlagSet, f *serveFlags) {
	d := config.DefaultGuestd()
	fs.StringVar(&f.config, "config", "", "guestd config file (default: "+config.DefaultGuestdConfig+" if it exists; --config= for none); flags win over it")
	fs.StringVar(&f.aaConfig, "c", "", "attestation agent config file (replaces [attestation_agent] and initdata's aa.toml)")
	fs.StringVar(&f.cdhConfig, "cdh-config", "", "confidential data hub config file (replaces [confidential_data_hub] and initdata's cdh.toml)")
	fs.StringVar(&f.initdata, "initdata-toml", d.Initdata, "initdata TOML (default: "+defaultInitdata+" if it exists)")
	fs.StringVar(&f.cmdline, "cmdline", d.Cmdline, "kernel command line file")
	fs.StringVar(&f.tee, "tee", d.Tee, "TEE override: "+strings.Join(detect.Names(), ", "))
	fs.StringVar(&f.aaSock, "attestation_sock", d.AttestationSock, "attestation agent ttRPC socket")
	fs.StringVar(&f.cdhSock, "cdh-sock", d.CDHSock, "data hub ttRPC socket (default: the CDH config's socket)")
	fs.StringVar(&f.rest, "rest", d.REST, "REST API address (empty: off)")
	fs.StringVar(&f.restFeatures, "rest-features", string(d.RESTFeatures), "REST features: resource, attestation, all (default: agent.guest_components_rest_api)")
	fs.Func("grpc", "also serve every service over gRPC at unix:///PATH, tcp://HOST:PORT or vsock://CID:PORT (repeatable; replaces the config file's list)",
		func(s string) error { f.grpc = append(f.grpc, s); return nil })
	fs.BoolVar(&f.exposeTEEKey, "expose-tee-key", d.ExposeTEEKey, "legacy: return the TEE private key with GetToken (see docs; off by default)")
}

// withFile loads guestd's config file, --config or else the default one
// when it exists, and takes from it every setting whose flag was not
// given. Without a file the flags' defaults stand.
func (f *serveFlags) withFile(fs *flag.FlagSet) error {
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	file := f.config
	if file == "" && !set["config"] { // --config= : no file
		if _, err := os.Stat(config.DefaultGuestdConfig); !errors.Is(err, os.ErrNotExist) {
			file = config.DefaultGuestdConfig
		}
	}
	f.guestd = config.DefaultGuestd()
	if file == "" {
		return nil
	}
	g, err := config.LoadGuestd(file)
	if err != nil {
		return err
	}
	f.guestd = g
	for name, v := range map[string]struct {
		dst *string
		val string
	}{
		"initdata-toml":    {&f.initdata, g.Initdata},
		"cmdline":          {&f.cmdline, g.Cmdline},
		"tee":              {&f.tee, g.Tee},
		"attestation_sock": {&f.aaSock, g.AttestationSock},
		"cdh-sock":         {&f.cdhSock, g.CDHSock},
		"rest":             {&f.rest, g.REST},
		"rest-features":    {&f.restFeatures, string(g.RESTFeatures)},
	} {
		if !set[name] {
			*v.dst = v.val
		}
	}
	if !set["grpc"] {
		f.grpc = g.GRPC
	}
	if !set["expose-tee-key"] {
		f.exposeTEEKey = g.ExposeTEEKey
	}
	return nil
}

// serve runs the all-in-one daemon: the AA and the CDH (with the
// keyprovider) on kata's ttRPC sockets, optional gRPC listeners, and the
// loopback REST API, all sharing one attester and one KBS client, until ctx
// ends.
func serve(ctx context.Context, args []string, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	daemonFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := f.withFile(fs); err != nil {
		return err
	}
	f.roles = roles{aa: true, cdh: true, rest: f.rest != ""}
	return serveRoles(ctx, f, stderr, lookupEnv)
}

// serveRoles runs the daemon for f until ctx ends.
func serveRoles(ctx context.Context, f serveFlags, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	log := slog.New(slog.NewTextHandler(stderr, nil))
	var d *daemon
	var err error
	if !f.roles.aa && !f.roles.cdh {
		d, err = newRESTClientDaemon(f, log)
	} else {
		d, err = newDaemon(ctx, f, lookupEnv, log)
	}
	if err != nil {
		return err
	}
	defer func() {
		d.close()
		log.Info("guestd stopped")
	}()
	if err := notify(lookupEnv, "READY=1"); err != nil {
		log.Warn("could not tell the service manager guestd is ready", "err", err)
	}
	defer context.AfterFunc(ctx, func() {
		log.Info("guestd stopping")
		if err := notify(lookupEnv, "STOPPING=1"); err != nil {
			log.Warn("could not tell the service manager guestd is stopping", "err", err)
		}
	})()
	return d.run(ctx)
}

type daemon struct {
	log       *slog.Logger
	att       attester.Attester
	closers   []func()
	listeners []func(context.Context) error
}

func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
}

// loaded is the configuration a daemon runs with.
type loaded struct {
	cmd      *config.Cmdline
	initdata *config.Initdata // nil without one
	initFile string
	aa       *config.AA
	aaFrom   string
	cdh      *config.CDH
	cdhFrom  string
}

// cdhSock is the data hub's ttRPC socket: the flag or file, else the CDH
// configuration's.
func (l *loaded) cdhSock(f serveFlags) string {
	if f.cdhSock != "" {
		return f.cdhSock
	}
	return l.cdh.Socket
}

// restFeatures is the REST feature set: the flag or file, else
// agent.guest_components_rest_api.
func (l *loaded) restFeatures(f serveFlags) string {
	if f.restFeatures != "" {
		return f.restFeatures
	}
	return string(l.cmd.GuestComponentsRestAPI)
}

// loadConfig reads the configuration of f as serve runs it and check
// prints it: the kernel command line, initdata, and the AA and CDH
// configuration (-c / --cdh-config, else as config.Guestd resolves them;
// under kata's names, upstream's rules). It logs unknown keys.
func loadConfig(f serveFlags, lookupEnv func(string) (string, bool), log *slog.Logger) (*loaded, error) {
	if err := checkAddresses(f); err != nil {
		return nil, err
	}
	if f.guestd != nil {
		for _, k := range f.guestd.Unknown {
			log.Warn("unknown key in the guestd config", "file", f.guestd.Path, "key", k)
		}
	}
	cmd, err := config.LoadCmdline(f.cmdline, lookupEnv)
	if err != nil {
		return nil, err
	}
	l := &loaded{cmd: cmd, initFile: f.initdata}
	if l.initFile == "" {
		if _, err := os.Stat(defaultInitdata); err == nil {
			l.initFile = defaultInitdata
		}
	}
	if l.initFile != "" {
		if l.initdata, err = config.LoadInitdata(l.initFile); err != nil {
			return nil, err
		}
		for _, k := range l.initdata.Unknown {
			log.Warn("unknown initdata key", "file", l.initFile, "key", k)
		}
	}
	// Kata's names take their configuration as upstream's binaries do:
	// from -c alone, else from aa_kbc_params; initdata's aa.toml and
	// cdh.toml reach them as -c, from kata.
	g, initdata := f.guestd, l.initdata
	if g == nil {
		g, initdata = config.DefaultGuestd(), nil
	}
	if f.aaConfig != "" {
		l.aaFrom = f.aaConfig
		l.aa, err = config.ResolveAA(f.aaConfig, cmd, lookupEnv)
	} else {
		l.aa, l.aaFrom, err = g.ResolveAA(initdata, cmd, lookupEnv)
	}
	if err != nil {
		return nil, err
	}
	if f.cdhConfig != "" {
		l.cdhFrom = f.cdhConfig
		l.cdh, err = config.ResolveCDH(f.cdhConfig, cmd, lookupEnv)
	} else {
		l.cdh, l.cdhFrom, err = g.ResolveCDH(initdata, cmd, lookupEnv)
	}
	if err != nil {
		return nil, err
	}
	for _, k := range l.aa.Unknown {
		log.Warn("unknown key in the AA config", "from", l.aaFrom, "key", k)
	}
	for _, k := range l.cdh.Unknown {
		log.Warn("unknown key in the CDH config", "from", l.cdhFrom, "key", k)
	}
	return l, nil
}

// Bounds of the shutdown: image pulls cancelled by SIGTERM clean up
// (unmount, delete half-applied layers) within drainTimeout; a secure
// mounter gets closeTimeout to close.
const (
	drainTimeout = 30 * time.Second
	closeTimeout = 30 * time.Second
)

func newDaemon(ctx context.Context, f serveFlags, lookupEnv func(string) (string, bool), log *slog.Logger) (_ *daemon, err error) {
	d := &daemon{log: log}
	defer func() { // d, not the result, which is nil on failure
		if err != nil {
			d.close()
		}
	}()
	cfg, err := loadConfig(f, lookupEnv, log)
	if err != nil {
		return nil, err
	}
	cmd, initdata, aaCfg, cdhCfg := cfg.cmd, cfg.initdata, cfg.aa, cfg.cdh

	opts := detect.Options{Logger: log}
	if dev, ok := lookupEnv("AA_TPM_DEVICE"); ok {
		opts.TPM.Device = dev
	}
	tee := f.tee
	if tee == "" {
		tee, _ = lookupEnv("GUESTD_TEE") // the override under kata's names, which take no --tee
	}
	if tee == "" {
		d.att, err = detect.Detect(ctx, opts)
	} else {
		d.att, err = detect.New(ctx, tee, opts)
	}
	if err != nil {
		return nil, err
	}
	if c, ok := d.att.(io.Closer); ok {
		d.closers = append(d.closers, func() { c.Close() })
	}

	var initData *protocol.InitData
	if initdata != nil {
		initData = &protocol.InitData{Format: "toml", Body: string(initdata.Raw)}
	}
	// One KBS client serves the AA's tokens and the CDH's resources, so the
	// guest attests once per token lifetime whatever mix of calls comes.
	var kbsClient *kbs.Client
	if t := aaCfg.TokenConfigs.KBS; t != nil {
		if kbsClient, err = kbs.New(kbs.Config{URL: t.URL, CertPEM: []byte(t.Cert), KeyAlgorithm: teekey.Algorithm(t.TeeKeyAlgorithm),
			Attester: d.att, InitData: initData, Logger: log}); err != nil {
			return nil, err
		}
	}
	var client kbc.Client
	switch {
	case !f.roles.cdh: // the attestation agent alone needs no KBC
	case cdhCfg.KBC.Name == config.KBCCC && kbsClient != nil && strings.TrimRight(cdhCfg.KBC.URL, "/") == strings.TrimRight(aaCfg.TokenConfigs.KBS.URL, "/"):
		client = kbsClient
	default:
		client, err = agent.NewKBC(ctx, config.KbcParams{KBC: cdhCfg.KBC.Name, URI: cdhCfg.KBC.URL}, agent.KBCOptions{
			Attester: d.att, CertPEM: []byte(cdhCfg.KBC.KBSCert), InitData: initData, Logger: log})
		if err != nil {
			return nil, err
		}
		if c, ok := client.(*kbs.Client); ok && kbsClient == nil {
			kbsClient = c
		}
	}

	var elog *eventlog.Log
	if aaCfg.EventlogConfig.EnableEventlog {
		var ext eventlog.Extender
		switch a := d.att.(type) {
		case *tpm.Attester:
			ext = eventlog.TPMExtender{PCRs: a}
		default:
			if d.att.Tee() == "tdx" {
				ext = eventlog.TDXExtender{}
			}
		}
		if ext != nil {
			if elog, err = eventlog.Open(ctx, eventlog.DefaultPath, eventlog.Options{Extender: ext, InitPCR: uint64(aaCfg.EventlogConfig.InitPCR)}); err != nil {
				return nil, err
			}
			d.closers = append(d.closers, func() { elog.Close() })
		}
	}

	aa, err := service.NewAA(service.AAConfig{Attester: d.att, KBS: kbsClient, Eventlog: elog,
		EventlogEnabled: aaCfg.EventlogConfig.EnableEventlog, ExposeTEEKey: f.exposeTEEKey, InitData: initdata, Logger: log})
	if err != nil {
		return nil, err
	}
	if initdata != nil && f.roles.aa {
		if _, err := aa.BindLaunchInitData(ctx); err != nil {
			return nil, fmt.Errorf("initdata %s: %w", cfg.initFile, err)
		}
	} else if f.initDigest != "" && f.roles.aa {
		digest, err := base64.StdEncoding.DecodeString(f.initDigest)
		if err != nil {
			return nil, fmt.Errorf("initdata digest: not standard base64: %w", err)
		}
		if _, err := aa.BindInitData(ctx, &aapb.BindInitDataRequest{Digest: digest}); err != nil {
			return nil, fmt.Errorf("initdata digest: %w", err)
		}
	}
	aaSock := f.aaSock
	if !f.roles.cdh { // the attestation agent alone
		if err := d.ttrpc(ctx, aaSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, aa, nil, nil) }); err != nil {
			return nil, err
		}
		for _, addr := range f.grpc {
			if err := d.grpc(ctx, addr, aa, nil, nil); err != nil {
				return nil, err
			}
		}
		log.Info("guestd ready", "role", "attestation-agent", "tee", d.att.Tee(), "aa", aaSock)
		return d, nil
	}
	if err := fetchCredentials(ctx, client, cdhCfg.Credentials); err != nil {
		return nil, err
	}
	// Pulled images are measured by the attestation agent: this one, or
	// the separate process on its socket under kata's launch plan.
	var measurer service.Measurer = aa
	if !f.roles.aa {
		measurer = &aaClient{addr: cdhCfg.AA.AASocket}
		d.closers = append(d.closers, measurer.(*aaClient).close)
	}
	pullOpts, err := agent.PullOptions(cdhCfg.Image, cmd.EnableSignatureVerification, client)
	if err != nil {
		return nil, err
	}
	pullOpts.Logger = log
	workDir := pullOpts.WorkDir
	if workDir == "" {
		workDir = imagepull.DefaultWorkDir
	}
	// The puller, and with it the layer store in the work dir, opens at the
	// first PullImage: see lazyPuller.
	puller := newLazyPuller(workDir, func(ctx context.Context) (service.Puller, error) {
		p, err := imagepull.New(ctx, pullOpts)
		if err != nil {
			return nil, err
		}
		log.Info("image puller open", "work_dir", workDir)
		return p, nil
	})
	unsealer := &sealed.Unsealer{KBC: client, SkipVerification: cdhCfg.SkipSealedSecretVerification}
	// SecureMount: encrypted block devices, possibly on the image work dir
	// before the first pull (see lazyPuller); closed on shutdown, after the
	// pulls.
	mounter := puller.guardMounts(securemount.New(securemount.Config{
		KBC: client, Unsealer: unsealer, Logger: log, BeforeMount: puller.beforeMount}))
	d.closers = append(d.closers, func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), closeTimeout)
		defer cancel()
		if err := mounter.Close(cctx); err != nil {
			log.Error("close the secure mounter", "err", err)
		}
	})
	// Closers run last first: the pulls finish before the secure mounts
	// (which may hold the work dir) are closed.
	d.closers = append(d.closers, func() {
		if err := puller.drain(drainTimeout); err != nil {
			log.Error("shutdown", "err", err)
		}
	})
	cdh := service.NewCDH(service.CDHConfig{KBC: client, Puller: puller, Measurer: measurer, Logger: log,
		Unsealer: unsealer, SecureMounter: mounter})
	kp := service.NewKeyProvider(service.KeyProviderConfig{KBC: client, Logger: log})

	cdhSock := cfg.cdhSock(f)
	if !f.roles.aa {
		aa = nil
	} else if err := d.ttrpc(ctx, aaSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, aa, nil, nil) }); err != nil {
		return nil, err
	}
	if err := d.ttrpc(ctx, cdhSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, nil, cdh, kp) }); err != nil {
		return nil, err
	}
	for _, addr := range f.grpc {
		if err := d.grpc(ctx, addr, aa, cdh, kp); err != nil {
			return nil, err
		}
	}
	if f.roles.rest && aa != nil {
		if err := d.restAPI(f.rest, cfg.restFeatures(f), service.RESTAttestation(aa), service.RESTResources(cdh)); err != nil {
			return nil, err
		}
	}
	log.Info("guestd ready", "tee", d.att.Tee(), "aa", aaSock, "cdh", cdhSock, "aa_config", cfg.aaFrom, "cdh_config", cfg.cdhFrom)
	return d, nil
}

// newRESTClientDaemon is api-server-rest on its own: the REST API in front
// of the attestation agent and the data hub, reached over their ttRPC
// sockets.
func newRESTClientDaemon(f serveFlags, log *slog.Logger) (*daemon, error) {
	d := &daemon{log: log}
	aaConn, err := dialTTRPC(f.restAAAddr)
	if err != nil {
		return nil, err
	}
	d.closers = append(d.closers, func() { aaConn.Close() })
	cdhConn, err := dialTTRPC(f.restCDHAddr)
	if err != nil {
		d.close()
		return nil, err
	}
	d.closers = append(d.closers, func() { cdhConn.Close() })
	if err := d.restAPI(f.rest, f.restFeatures,
		service.RESTAttestationClient(aapb.NewTTRPCAttestationAgentServiceClient(aaConn)),
		service.RESTResourcesClient(cdhpb.NewTTRPCGetResourceServiceClient(cdhConn))); err != nil {
		d.close()
		return nil, err
	}
	log.Info("guestd ready", "role", "api-server-rest", "aa", f.restAAAddr, "cdh", f.restCDHAddr)
	return d, nil
}

func (d *daemon) restAPI(addr, features string, aa rest.Attestation, res rest.Resources) error {
	h, err := rest.New(rest.Config{Features: features, Version: "guestd"}, aa, res, d.log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("REST API: %w", err)
	}
	d.log.Info("REST API listening", "addr", ln.Addr().String(), "features", features)
	d.listeners = append(d.listeners, func(ctx context.Context) error { return rest.Serve(ctx, ln, h) })
	return nil
}

// dialTTRPC connects to a ttRPC server on a unix:// address. The ttRPC
// client reconnects on nothing, so the server must be up (kata starts the
// agent and the data hub first and waits for their sockets).
func dialTTRPC(addr string) (*ttrpc.Client, error) {
	a, err := agent.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if a.Network != "unix" {
		return nil, fmt.Errorf("%s: ttRPC needs a unix:// socket", addr)
	}
	c, err := net.Dial("unix", a.Path)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return ttrpc.NewClient(c), nil
}

// aaClient is the attestation agent across its socket, dialled on first
// use, for a data hub running as its own process.
type aaClient struct {
	addr string
	mu   sync.Mutex
	conn *ttrpc.Client
}

func (c *aaClient) ExtendRuntimeMeasurement(ctx context.Context, req *aapb.ExtendRuntimeMeasurementRequest) (*aapb.ExtendRuntimeMeasurementResponse, error) {
	c.mu.Lock()
	if c.conn == nil {
		conn, err := dialTTRPC(c.addr)
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		c.conn = conn
	}
	client := aapb.NewTTRPCAttestationAgentServiceClient(c.conn)
	c.mu.Unlock()
	return client.ExtendRuntimeMeasurement(ctx, req)
}

func (c *aaClient) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
}

// ttrpc serves on a ttRPC socket until ctx ends. Every call's context
// ends with ctx, so a call in progress at SIGTERM (a pull) is cancelled;
// the server is shut down once the calls have answered (up to ttrpcGrace):
// ttrpc's Shutdown would close the connection of a call it wrongly takes
// for idle, and the caller would get "ttrpc: closed" instead of the
// call's Canceled.
func (d *daemon) ttrpc(ctx context.Context, addr string, register func(*ttrpc.Server)) error {
	a, err := agent.ParseAddress(addr)
	if err != nil {
		return err
	}
	ln, err := agent.Listen(a)
	if err != nil {
		return err
	}
	var calls atomic.Int64
	s, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()),
		ttrpc.WithUnaryServerInterceptor(func(rctx context.Context, um ttrpc.Unmarshaler, _ *ttrpc.UnaryServerInfo, m ttrpc.Method) (any, error) {
			calls.Add(1)
			defer calls.Add(-1)
			rctx, done := callContext(rctx, ctx)
			defer done()
			return m(rctx, um)
		}))
	if err != nil {
		ln.Close()
		return err
	}
	register(s)
	d.log.Info("ttRPC listening", "addr", addr)
	d.listeners = append(d.listeners, func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(context.WithoutCancel(ctx), ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
		}
		deadline := time.Now().Add(ttrpcGrace)
		if calls.Load() > 0 {
			for calls.Load() > 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // the last answers leave the connections
		}
		sctx, cancel := context.WithDeadline(context.Background(), deadline.Add(time.Second))
		defer cancel()
		if err := s.Shutdown(sctx); err != nil {
			s.Close()
			return err
		}
		return nil
	})
	return nil
}

// ttrpcGrace bounds how long a stopping ttRPC server waits for its calls.
const ttrpcGrace = 5 * time.Second

// callContext returns the context of one call: the transport's, also
// ended when stop ends. done releases it.
func callContext(rctx, stop context.Context) (_ context.Context, done func()) {
	rctx, cancel := context.WithCancel(rctx)
	unregister := context.AfterFunc(stop, cancel)
	return rctx, func() { unregister(); cancel() }
}

func (d *daemon) grpc(ctx context.Context, addr string, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) error {
	a, err := agent.ParseAddress(addr)
	if err != nil {
		return err
	}
	ln, err := agent.Listen(a)
	if err != nil {
		return err
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(rctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		rctx, done := callContext(rctx, ctx)
		defer done()
		return h(rctx, req)
	}))
	service.RegisterGRPC(s, aa, cdh, kp)
	d.log.Info("gRPC listening", "addr", ln.Addr().String())
	d.listeners = append(d.listeners, func(ctx context.Context) error {
		go func() { <-ctx.Done(); s.GracefulStop() }()
		if err := s.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return err
		}
		return nil
	})
	return nil
}

// run serves until ctx ends or a listener fails.
func (d *daemon) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(d.listeners))
	for _, l := range d.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l(ctx); err != nil && ctx.Err() == nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Wait()
	close(errc)
	return <-errc
}

// fetchCredentials writes the [[credentials]] resources where the CDH
// config says, as upstream's data hub does at start-up.
func fetchCredentials(ctx context.Context, client kbc.Client, creds []config.Credential) error {
	for _, c := range creds {
		uri, err := resource.Parse(c.ResourceURI)
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.ResourceURI, err)
		}
		data, err := client.GetResource(ctx, uri)
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.ResourceURI, err)
		}
		err = os.MkdirAll(filepath.Dir(c.Path), 0o700)
		if err == nil {
			err = atomicfile.WriteFile(c.Path, data, 0o600)
		}
		clear(data)
		if err != nil {
			return fmt.Errorf("credential %s: %w", c.ResourceURI, err)
		}
	}
	return nil
}
