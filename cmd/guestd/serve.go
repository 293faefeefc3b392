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
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc"

	"github.com/guestd/guestd/agent"
	"github.com/guestd/guestd/agent/api/aapb"
	"github.com/guestd/guestd/agent/api/cdhpb"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/agent/eventlog"
	"github.com/guestd/guestd/agent/rest"
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
const defaultInitdata = "/run/confidential-containers/initdata/initdata.toml"

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
	exposeTEEKey                                bool
}

// serve runs the all-in-one daemon: the AA and the CDH (with the
// keyprovider) on kata's ttRPC sockets, optional gRPC listeners, and the
// loopback REST API, all sharing one attester and one KBS client, until ctx
// ends.
func serve(ctx context.Context, args []string, stderr io.Writer, lookupEnv func(string) (string, bool)) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f serveFlags
	fs.StringVar(&f.aaConfig, "c", "", "attestation agent config file")
	fs.StringVar(&f.cdhConfig, "cdh-config", "", "confidential data hub config file")
	fs.StringVar(&f.initdata, "initdata-toml", "", "initdata TOML (default: "+defaultInitdata+" if it exists)")
	fs.StringVar(&f.cmdline, "cmdline", config.DefaultCmdlinePath, "kernel command line file")
	fs.StringVar(&f.tee, "tee", "", "TEE override: "+strings.Join(detect.Names(), ", "))
	fs.StringVar(&f.aaSock, "attestation_sock", config.DefaultAASocket, "attestation agent ttRPC socket")
	fs.StringVar(&f.cdhSock, "cdh-sock", "", "data hub ttRPC socket (default: the CDH config's socket)")
	fs.StringVar(&f.rest, "rest", "127.0.0.1:8006", "REST API address (empty: off)")
	fs.StringVar(&f.restFeatures, "rest-features", "", "REST features: resource, attestation, all (default: agent.guest_components_rest_api)")
	fs.Func("grpc", "also serve every service over gRPC at unix:///PATH, tcp://HOST:PORT or vsock://CID:PORT (repeatable)",
		func(s string) error { f.grpc = append(f.grpc, s); return nil })
	fs.BoolVar(&f.exposeTEEKey, "expose-tee-key", false, "legacy: return the TEE private key with GetToken (see docs; off by default)")
	if err := fs.Parse(args); err != nil {
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
	defer d.close()
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

func newDaemon(ctx context.Context, f serveFlags, lookupEnv func(string) (string, bool), log *slog.Logger) (d *daemon, err error) {
	d = &daemon{log: log}
	defer func() {
		if err != nil {
			d.close()
		}
	}()
	cmd, err := config.LoadCmdline(f.cmdline, lookupEnv)
	if err != nil {
		return nil, err
	}
	var initdata *config.Initdata
	initFile := f.initdata
	if initFile == "" {
		if _, err := os.Stat(defaultInitdata); err == nil {
			initFile = defaultInitdata
		}
	}
	if initFile != "" {
		if initdata, err = config.LoadInitdata(initFile); err != nil {
			return nil, err
		}
	}
	aaCfg, err := config.ResolveAA(f.aaConfig, cmd, lookupEnv)
	if err != nil {
		return nil, err
	}
	cdhCfg, err := config.ResolveCDH(f.cdhConfig, cmd, lookupEnv)
	if err != nil {
		return nil, err
	}
	for _, k := range aaCfg.Unknown {
		log.Warn("unknown key in the AA config", "file", f.aaConfig, "key", k)
	}
	for _, k := range cdhCfg.Unknown {
		log.Warn("unknown key in the CDH config", "file", f.cdhConfig, "key", k)
	}

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
			return nil, fmt.Errorf("initdata %s: %w", initFile, err)
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
		if err := d.ttrpc(aaSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, aa, nil, nil) }); err != nil {
			return nil, err
		}
		for _, addr := range f.grpc {
			if err := d.grpc(addr, aa, nil, nil); err != nil {
				return nil, err
			}
		}
		log.Info("guestd ready", "role", "attestation-agent", "tee", d.att.Tee(), "aa", aaSock)
		return d, nil
	}
	if err := fetchCredentials(ctx, client, cdhCfg.Credentials); err != nil {
		return nil, err
	}
	pullOpts, err := agent.PullOptions(cdhCfg.Image, cmd.EnableSignatureVerification, client)
	if err != nil {
		return nil, err
	}
	pullOpts.Logger = log
	puller, err := imagepull.New(ctx, pullOpts)
	if err != nil {
		return nil, err
	}
	// Pulled images are measured by the attestation agent: this one, or
	// the separate process on its socket under kata's launch plan.
	var measurer service.Measurer = aa
	if !f.roles.aa {
		measurer = &aaClient{addr: cdhCfg.AA.AASocket}
		d.closers = append(d.closers, measurer.(*aaClient).close)
	}
	cdh := service.NewCDH(service.CDHConfig{KBC: client, Puller: puller, Measurer: measurer, Logger: log,
		Unsealer: &sealed.Unsealer{KBC: client, SkipVerification: cdhCfg.SkipSealedSecretVerification}})
	kp := service.NewKeyProvider(service.KeyProviderConfig{KBC: client, Logger: log})

	cdhSock := f.cdhSock
	if cdhSock == "" {
		cdhSock = cdhCfg.Socket
	}
	if !f.roles.aa {
		aa = nil
	} else if err := d.ttrpc(aaSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, aa, nil, nil) }); err != nil {
		return nil, err
	}
	if err := d.ttrpc(cdhSock, func(s *ttrpc.Server) { service.RegisterTTRPC(s, nil, cdh, kp) }); err != nil {
		return nil, err
	}
	for _, addr := range f.grpc {
		if err := d.grpc(addr, aa, cdh, kp); err != nil {
			return nil, err
		}
	}
	if f.roles.rest && aa != nil {
		features := f.restFeatures
		if features == "" {
			features = string(cmd.GuestComponentsRestAPI)
		}
		if err := d.restAPI(f.rest, features, service.RESTAttestation(aa), service.RESTResources(cdh)); err != nil {
			return nil, err
		}
	}
	log.Info("guestd ready", "tee", d.att.Tee(), "aa", aaSock, "cdh", cdhSock)
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

func (d *daemon) ttrpc(addr string, register func(*ttrpc.Server)) error {
	a, err := agent.ParseAddress(addr)
	if err != nil {
		return err
	}
	ln, err := agent.Listen(a)
	if err != nil {
		return err
	}
	s, err := ttrpc.NewServer(ttrpc.WithServerHandshaker(ttrpc.UnixSocketRequireSameUser()))
	if err != nil {
		ln.Close()
		return err
	}
	register(s)
	d.log.Info("ttRPC listening", "addr", addr)
	d.listeners = append(d.listeners, func(ctx context.Context) error {
		errc := make(chan error, 1)
		go func() { errc <- s.Serve(ctx, ln) }()
		select {
		case err := <-errc:
			return err
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			return s.Shutdown(sctx)
		}
	})
	return nil
}

func (d *daemon) grpc(addr string, aa *service.AA, cdh *service.CDH, kp *service.KeyProvider) error {
	a, err := agent.ParseAddress(addr)
	if err != nil {
		return err
	}
	ln, err := agent.Listen(a)
	if err != nil {
		return err
	}
	s := grpc.NewServer()
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
