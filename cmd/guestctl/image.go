package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	ocikp "github.com/containers/ocicrypt/utils/keyprovider"
	"google.golang.org/grpc"

	"github.com/guestd/guestd/agent"
	"github.com/guestd/guestd/imagepull"
	"github.com/guestd/guestd/imagepull/encrypt"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/keyprovider"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// pullFlags are pull's flags; the image configuration mirrors the CDH
// [image] keys.
type pullFlags struct {
	kbsFlags
	policy, sigstore, auth, workDir, arch string
	decryptionKeys, insecure              listFlag
	requirePolicy, progress, noProgress   bool
	layers                                int
}

func (f *pullFlags) register(fs *flag.FlagSet) {
	f.kbsFlags.register(fs)
	fs.StringVar(&f.policy, "policy", "", "image security policy: kbs:///… resource or file path")
	fs.BoolVar(&f.requirePolicy, "require-policy", false, "fail when no policy is given (agent.enable_signature_verification)")
	fs.StringVar(&f.sigstore, "sigstore-config", "", "registries.d YAML saying where signatures live: kbs:///… or path")
	fs.StringVar(&f.auth, "auth", "", "registry credentials (auth.json): kbs:///… or path")
	fs.Var(&f.decryptionKeys, "decryption-key", "private key for JWE-encrypted layers: kbs:///… or path (repeatable)")
	fs.Var(&f.insecure, "insecure-registry", "HOST[:PORT] reached over plain HTTP or unverified TLS (repeatable)")
	fs.StringVar(&f.workDir, "work-dir", imagepull.DefaultWorkDir, "layer store and bundle records")
	fs.StringVar(&f.arch, "arch", "", "architecture to pick from a manifest list (default: this machine's)")
	fs.IntVar(&f.layers, "layers", 0, "concurrent layer downloads (default 3)")
	fs.BoolVar(&f.noProgress, "no-progress", false, "do not show progress even on a terminal")
}

func pull(ctx context.Context, args []string, e env) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f pullFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return fmt.Errorf("%w: want IMAGE BUNDLE, got %d arguments", errUsage, fs.NArg())
	}
	image, bundle := fs.Arg(0), fs.Arg(1)
	log := f.logger(e)
	var client kbc.Client
	closeFn := func() {}
	if f.needsKBC() {
		var err error
		if client, closeFn, err = f.client(ctx, e, log, false); err != nil {
			return err
		}
	}
	defer closeFn()
	opts := imagepull.Options{
		WorkDir: f.workDir, KBC: client, PolicyURI: f.policy, RequirePolicy: f.requirePolicy,
		SigstoreConfigURI: f.sigstore, AuthURI: f.auth, DecryptionKeys: f.decryptionKeys,
		InsecureRegistries: f.insecure, Architecture: f.arch, MaxConcurrentLayers: f.layers, Logger: log,
	}
	var prog *progress
	if !f.noProgress && isTerminal(e.stderr) {
		prog = newProgress(e.stderr)
		opts.Progress = prog.event
	}
	p, err := imagepull.New(ctx, opts)
	if err != nil {
		return err
	}
	d, err := p.Pull(ctx, image, bundle)
	if prog != nil {
		prog.finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(e.stdout, d)
	return nil
}

// needsKBC reports whether anything pull was given lives in a KBS (or the
// user pointed at one).
func (f *pullFlags) needsKBC() bool {
	if f.kbsURL != "" {
		return true
	}
	for _, v := range append([]string{f.policy, f.sigstore, f.auth}, f.decryptionKeys...) {
		if strings.HasPrefix(v, "kbs:") || strings.HasPrefix(v, "kbs+") {
			return true
		}
	}
	return false
}

func rm(ctx context.Context, args []string, e env) error {
	fs := flag.NewFlagSet("rm", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	workDir := fs.String("work-dir", imagepull.DefaultWorkDir, "layer store and bundle records")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want BUNDLE", errUsage)
	}
	p, err := imagepull.New(ctx, imagepull.Options{WorkDir: *workDir})
	if err != nil {
		return err
	}
	return p.Remove(ctx, fs.Arg(0))
}

func image(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] != "encrypt" {
		return fmt.Errorf("%w: guestctl image encrypt --kbs URL --admin-key KEY --key-id kbs:///default/key/ID SRC DST", errUsage)
	}
	fs := flag.NewFlagSet("image encrypt", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	kbsURL := fs.String("kbs", "", "KBS to register the key-encryption key with (required)")
	kbsCert := fs.String("kbs-cert", "", "PEM file with an extra root CA for an https KBS")
	adminKey := fs.String("admin-key", "", "Ed25519 admin private key (PEM) of the KBS (required)")
	keyID := fs.String("key-id", "", "resource URI of the KEK, kbs:///<repo>/<type>/<tag> (required)")
	alg := fs.String("algorithm", keyprovider.A256GCM, "layer key wrapping: A256GCM or A256CTR")
	insecure := fs.Bool("insecure", false, "allow plain HTTP / unverified TLS registries")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 2 || *kbsURL == "" || *adminKey == "" || *keyID == "" {
		return fmt.Errorf("%w: want --kbs, --admin-key, --key-id and SRC DST (oci:DIR:TAG or docker://HOST/REPO:TAG)", errUsage)
	}
	key, cert, err := readAdmin(*adminKey, *kbsCert)
	if err != nil {
		return err
	}
	return encrypt.Encrypt(ctx, fs.Arg(0), fs.Arg(1), encrypt.Options{
		KBSURL: *kbsURL, AdminKey: key, KBSCertPEM: cert, KeyID: *keyID, Algorithm: *alg,
		Insecure: *insecure, ReportWriter: e.stderr,
	})
}

// keyproviderServe serves the ocicrypt keyprovider gRPC protocol for
// tenants: WrapKey wraps layer keys under a KEK it registers in the KBS
// (skopeo --encryption-key provider:attestation-agent:keyid=…).
func keyproviderServe(ctx context.Context, args []string, e env) error {
	if len(args) == 0 || args[0] != "serve" {
		return fmt.Errorf("%w: guestctl keyprovider serve --listen unix:///PATH|tcp://HOST:PORT [--kbs URL --admin-key KEY]", errUsage)
	}
	fs := flag.NewFlagSet("keyprovider serve", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	listen := fs.String("listen", "", "unix:///PATH or tcp://HOST:PORT (required)")
	kbsURL := fs.String("kbs", "", "KBS to register key-encryption keys with")
	kbsCert := fs.String("kbs-cert", "", "PEM file with an extra root CA for an https KBS")
	adminKey := fs.String("admin-key", "", "Ed25519 admin private key (PEM) of the KBS")
	if err := parse(fs, args[1:]); err != nil {
		return err
	}
	if *listen == "" || fs.NArg() != 0 || (*kbsURL == "") != (*adminKey == "") {
		return fmt.Errorf("%w: want --listen, and --kbs with --admin-key or neither", errUsage)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	cfg := keyprovider.ServerConfig{Logger: log}
	if *kbsURL != "" {
		key, cert, err := readAdmin(*adminKey, *kbsCert)
		if err != nil {
			return err
		}
		if cfg.Registrar, err = kbs.NewAdmin(*kbsURL, key, cert); err != nil {
			return err
		}
	}
	addr, err := agent.ParseAddress(*listen)
	if err != nil {
		return fmt.Errorf("%w: --listen: %v", errUsage, err)
	}
	ln, err := agent.Listen(addr)
	if err != nil {
		return err
	}
	srv := keyprovider.NewServer(cfg)
	defer srv.Close()
	gs := grpc.NewServer()
	ocikp.RegisterKeyProviderServiceServer(gs, srv)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() { <-ctx.Done(); gs.GracefulStop() }()
	log.Info("keyprovider listening", "addr", ln.Addr().String())
	if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// readAdmin reads the KBS admin key (--admin-key) and the optional extra CA
// of an https KBS (--kbs-cert).
func readAdmin(keyPath, certPath string) (ed25519.PrivateKey, []byte, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read --admin-key: %w", err)
	}
	key, err := encrypt.ParseAdminKey(keyPEM)
	if err != nil {
		return nil, nil, err
	}
	var cert []byte
	if certPath != "" {
		if cert, err = os.ReadFile(certPath); err != nil {
			return nil, nil, fmt.Errorf("read --kbs-cert: %w", err)
		}
	}
	return key, cert, nil
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// progress draws one line per layer state change and a running total.
type progress struct {
	w     io.Writer
	mu    sync.Mutex
	start time.Time
	bytes map[int]int64
	last  time.Time
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, start: time.Now(), bytes: map[int]int64{}}
}

func (p *progress) event(ev imagepull.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	short := ev.Digest
	if len(short) > 19 {
		short = short[:19]
	}
	switch ev.Phase {
	case imagepull.PhaseFetch:
		p.bytes[ev.Layer] = ev.Bytes
		if time.Since(p.last) < 200*time.Millisecond {
			return
		}
		p.last = time.Now()
		var total int64
		for _, b := range p.bytes {
			total += b
		}
		secs := time.Since(p.start).Seconds()
		fmt.Fprintf(p.w, "\r%s fetched %s (%s/s)        ", ev.Image, size(total), size(int64(float64(total)/max(secs, 0.001))))
	case imagepull.PhaseDone, imagepull.PhaseCached:
		fmt.Fprintf(p.w, "\rlayer %d/%d %s %s                        \n", ev.Layer+1, ev.Layers, short, ev.Phase)
	case imagepull.PhaseVerify:
		fmt.Fprintf(p.w, "%s: policy check passed\n", ev.Image)
	}
}

func (p *progress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "done in %s\n", time.Since(p.start).Round(time.Millisecond))
}

func size(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
