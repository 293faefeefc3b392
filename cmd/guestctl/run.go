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
	"strings"
	"time"

	"github.com/guestd/guestd/agent"
	"github.com/guestd/guestd/agent/config"
	"github.com/guestd/guestd/attester"
	"github.com/guestd/guestd/attester/detect"
	"github.com/guestd/guestd/attester/tpm"
	"github.com/guestd/guestd/internal/atomicfile"
	"github.com/guestd/guestd/kbc"
	"github.com/guestd/guestd/kbc/kbs"
	"github.com/guestd/guestd/kbc/offline"
	"github.com/guestd/guestd/kbc/resource"
	"github.com/guestd/guestd/kbc/teekey"
)

// env is what run needs from the outside world; tests replace parts of it.
type env struct {
	stdout, stderr io.Writer
	lookupEnv      func(string) (string, bool)
	// newAttester opens the attester for name ("" = detect).
	newAttester func(ctx context.Context, name string, opts detect.Options) (attester.Attester, error)
}

func defaultEnv() env {
	return env{
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		newAttester: func(ctx context.Context, name string, opts detect.Options) (attester.Attester, error) {
			if name == "" {
				return detect.Detect(ctx, opts)
			}
			return detect.New(ctx, name, opts)
		},
	}
}

const usage = `usage: guestctl <command> [flags]

commands:
  get-resource [--kbs URL] [--kbs-cert PEM] [--tee NAME] [-o FILE] kbs:///repo/type/tag
        fetch a resource (raw bytes to stdout, or to FILE)
  attest [--kbs URL] [--kbs-cert PEM] [--tee NAME]
        attest to the KBS and print the token's claims
  evidence [--tee NAME] --runtime-data STR
        print the TEE's evidence for STR as report data
  pull [--kbs URL] [--policy P] [--sigstore-config P] [--auth P] [--decryption-key P]
       [--insecure-registry HOST] [--work-dir DIR] IMAGE BUNDLE
        pull, verify, decrypt and unpack IMAGE; mount BUNDLE/rootfs; print the digest
  rm [--work-dir DIR] BUNDLE
        unmount and delete a bundle made by pull
  image encrypt --kbs URL --admin-key KEY --key-id kbs:///default/key/ID SRC DST
        encrypt every layer, registering the key-encryption key in the KBS
  keyprovider serve --listen unix:///PATH|tcp://HOST:PORT [--kbs URL --admin-key KEY]
        serve the ocicrypt keyprovider protocol (WrapKey) for skopeo and friends

Run 'guestctl <command> -h' for a command's flags.
`

// errUsage marks errors that are the caller's: exit status 2.
var errUsage = errors.New("usage")

func run(ctx context.Context, args []string, e env) int {
	if len(args) == 0 {
		fmt.Fprint(e.stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "get-resource":
		err = getResource(ctx, args[1:], e)
	case "attest":
		err = attest(ctx, args[1:], e)
	case "evidence":
		err = evidence(ctx, args[1:], e)
	case "pull":
		err = pull(ctx, args[1:], e)
	case "rm":
		err = rm(ctx, args[1:], e)
	case "image":
		err = image(ctx, args[1:], e)
	case "keyprovider":
		err = keyproviderServe(ctx, args[1:], e)
	case "-h", "--help", "help":
		fmt.Fprint(e.stdout, usage)
		return 0
	default:
		fmt.Fprintf(e.stderr, "guestctl: unknown command %q\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(e.stderr, "guestctl %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(e.stderr, "guestctl %s: %v\n", args[0], err)
		return 1
	}
}

// teeFlags are the flags every command that attests takes.
type teeFlags struct {
	tee, tpmDevice, tpmAKHandle string
	verbose                     bool
}

func (f *teeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.tee, "tee", "", "TEE to use: "+strings.Join(detect.Names(), ", ")+" (default: detect)")
	fs.StringVar(&f.tpmDevice, "tpm-device", "", "TPM device, or unix:PATH for a TPM emulator socket (default: $AA_TPM_DEVICE, /dev/tpmrm0, /dev/tpm0)")
	fs.StringVar(&f.tpmAKHandle, "tpm-ak-handle", "", "persistent handle of the TPM attestation key (default: $AA_TPM_AK_HANDLE, 0x81010002)")
	fs.BoolVar(&f.verbose, "v", false, "log progress to stderr")
}

func (f *teeFlags) open(ctx context.Context, e env, log *slog.Logger) (attester.Attester, func(), error) {
	opts := detect.Options{Logger: log}
	opts.TPM.Device = f.tpmDevice
	if opts.TPM.Device == "" {
		opts.TPM.Device, _ = e.lookupEnv("AA_TPM_DEVICE")
	}
	handle := f.tpmAKHandle
	if handle == "" {
		handle, _ = e.lookupEnv("AA_TPM_AK_HANDLE")
	}
	if handle != "" {
		h, err := tpm.ParseAKHandle(handle)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --tpm-ak-handle: %v", errUsage, err)
		}
		opts.TPM.AKHandle = h
	}
	a, err := e.newAttester(ctx, f.tee, opts)
	if err != nil {
		return nil, nil, err
	}
	closeFn := func() {
		if c, ok := a.(io.Closer); ok {
			_ = c.Close()
		}
	}
	return a, closeFn, nil
}

func (f *teeFlags) logger(e env) *slog.Logger {
	if !f.verbose {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// kbsFlags select and configure the KBC.
type kbsFlags struct {
	teeFlags
	kbsURL, kbsCert, keyAlg, cmdline string
	passport                         bool
	timeout                          time.Duration
}

func (f *kbsFlags) register(fs *flag.FlagSet) {
	f.teeFlags.register(fs)
	fs.StringVar(&f.kbsURL, "kbs", "", "KBS URL (default: cc_kbc from agent.aa_kbc_params)")
	fs.StringVar(&f.kbsCert, "kbs-cert", "", "PEM file with an extra root CA for an https KBS")
	fs.StringVar(&f.keyAlg, "tee-key-algorithm", "", "TEE key: ECDH-ES+A256KW-P256 (default), ECDH-ES+A256KW-P521, RSA-OAEP-256")
	fs.StringVar(&f.cmdline, "cmdline", config.DefaultCmdlinePath, "kernel command line file")
	fs.BoolVar(&f.passport, "passport", false, "present the token as Authorization: Bearer instead of the session cookie")
	fs.DurationVar(&f.timeout, "timeout", kbs.DefaultTimeout, "overall deadline, retries included")
}

// client builds the KBC: the KBS at --kbs, else whatever aa_kbc_params says.
// needKBS makes a non-KBS KBC an error (attest needs a KBS).
func (f *kbsFlags) client(ctx context.Context, e env, log *slog.Logger, needKBS bool) (kbc.Client, func(), error) {
	var cert []byte
	if f.kbsCert != "" {
		var err error
		if cert, err = os.ReadFile(f.kbsCert); err != nil {
			return nil, nil, fmt.Errorf("read --kbs-cert: %w", err)
		}
	}
	alg, err := teekey.ParseAlgorithm(f.keyAlg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --tee-key-algorithm: %v", errUsage, err)
	}
	params := config.KbcParams{KBC: config.KBCCC, URI: f.kbsURL}
	if f.kbsURL == "" {
		cmd, err := config.LoadCmdline(f.cmdline, e.lookupEnv)
		if err != nil {
			return nil, nil, err
		}
		params = cmd.KbcParams
		log.Debug("KBC from the kernel command line", "kbc", params.String(), "from", cmd.KbcParamsFrom)
		if needKBS && params.KBC != config.KBCCC {
			return nil, nil, fmt.Errorf("no KBS to attest to: aa_kbc_params is %s (give --kbs or cc_kbc::<url>)", params)
		}
	}
	opts := agent.KBCOptions{CertPEM: cert, KeyAlgorithm: alg, Passport: f.passport, Timeout: f.timeout, Logger: log}
	if extra, ok := e.lookupEnv(offline.ExtraFilesEnv); ok {
		opts.Offline.ExtraFiles = offline.SplitExtraFiles(extra)
	}
	closeFn := func() {}
	if params.KBC == config.KBCCC {
		a, c, err := f.open(ctx, e, log)
		if err != nil {
			return nil, nil, err
		}
		opts.Attester, closeFn = a, c
	}
	client, err := agent.NewKBC(ctx, params, opts)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return client, closeFn, nil
}

func getResource(ctx context.Context, args []string, e env) error {
	fs := flag.NewFlagSet("get-resource", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f kbsFlags
	f.register(fs)
	out := fs.String("o", "", "write the resource to this file (default: stdout)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one resource URI, got %d arguments", errUsage, fs.NArg())
	}
	uri, err := resource.Parse(fs.Arg(0))
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	log := f.logger(e)
	client, closeFn, err := f.client(ctx, e, log, false)
	if err != nil {
		return err
	}
	defer closeFn()
	data, err := client.GetResource(ctx, uri)
	if err != nil {
		return err
	}
	if *out == "" {
		_, err = e.stdout.Write(data)
		return err
	}
	return atomicfile.WriteFile(*out, data, 0o600)
}

func attest(ctx context.Context, args []string, e env) error {
	fs := flag.NewFlagSet("attest", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f kbsFlags
	f.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: attest takes no arguments", errUsage)
	}
	log := f.logger(e)
	client, closeFn, err := f.client(ctx, e, log, true)
	if err != nil {
		return err
	}
	defer closeFn()
	c, ok := client.(*kbs.Client)
	if !ok {
		return fmt.Errorf("attest needs a KBS client, have %T", client)
	}
	tok, err := c.Attest(ctx)
	if err != nil {
		return err
	}
	return writeJSON(e.stdout, tok.Claims)
}

func evidence(ctx context.Context, args []string, e env) error {
	fs := flag.NewFlagSet("evidence", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	var f teeFlags
	f.register(fs)
	rd := fs.String("runtime-data", "", "report data to bind (raw bytes of the string; at most the TEE's report data size)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("%w: evidence takes no arguments", errUsage)
	}
	a, closeFn, err := f.open(ctx, e, f.logger(e))
	if err != nil {
		return err
	}
	defer closeFn()
	ev, err := a.Evidence(ctx, []byte(*rd))
	if err != nil {
		return fmt.Errorf("%s evidence: %w", a.Tee(), err)
	}
	return writeJSON(e.stdout, ev)
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

func writeJSON(w io.Writer, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("output is not JSON: %w", err)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
