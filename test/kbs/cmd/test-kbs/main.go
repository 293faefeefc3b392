package main

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/guestd/guestd/internal/atomicfile"
	"github.com/guestd/guestd/kbc/protocol"
	"github.com/guestd/guestd/test/kbs"
	"github.com/guestd/guestd/test/kbs/verifier/sample"
	"github.com/guestd/guestd/test/kbs/verifier/snp"
	"github.com/guestd/guestd/test/kbs/verifier/tdx"
	"github.com/guestd/guestd/test/kbs/verifier/tpm"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "test-kbs: %v\n", err)
		}
		os.Exit(2)
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("test-kbs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on (port 0 picks a free port)")
	repo := fs.String("repo", "", "resource repository: files <repo>/<type>/<tag> (required)")
	policy := fs.String("policy", "deny-all", "resource policy: allow-all, deny-all or a JSON policy file")
	adminKey := fs.String("admin-pubkey", "", "Ed25519 public key (PEM) allowed to write resources")
	snpRoots := fs.String("snp-roots", "", "PEM with the AMD ARK and ASK (and ASVK) to trust for snp evidence")
	snpProduct := fs.String("snp-product", "Milan", "SEV-SNP product line of --snp-roots")
	tdxRoot := fs.String("tdx-root", "", "PEM root CA to trust for tdx quotes")
	tpmAKs := fs.String("tpm-ak", "", "PEM file of TPM attestation keys to trust for tpm evidence")
	tlsCert := fs.String("tls-cert", "", "serve HTTPS with this certificate (PEM)")
	tlsKey := fs.String("tls-key", "", "private key of --tls-cert (PEM)")
	hash := fs.String("hash", "", "select this binding hash in challenges (sha256, sha384, sha512; default: none, i.e. sha384)")
	sessionTimeout := fs.Duration("session-timeout", kbs.DefaultSessionTimeout, "session lifetime")
	tokenLifetime := fs.Duration("token-lifetime", kbs.DefaultTokenLifetime, "attestation token lifetime")
	addrFile := fs.String("addr-file", "", "write the address actually listened on to this file")
	verbose := fs.Bool("v", false, "debug logs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *repo == "" {
		return errors.New("--repo is required")
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	cfg := kbs.Config{
		RepoDir:        *repo,
		Verifiers:      map[string]kbs.Verifier{"sample": sample.New()},
		SessionTimeout: *sessionTimeout,
		TokenLifetime:  *tokenLifetime,
		Logger:         log,
	}
	switch *policy {
	case "allow-all":
		cfg.Policy = kbs.AllowAll()
	case "deny-all":
		cfg.Policy = kbs.DenyAll()
	default:
		data, err := os.ReadFile(*policy)
		if err != nil {
			return fmt.Errorf("--policy: %w", err)
		}
		if cfg.Policy, err = kbs.ParsePolicy(data); err != nil {
			return fmt.Errorf("--policy %s: %w", *policy, err)
		}
	}
	if *hash != "" {
		h, err := protocol.ParseHashAlgorithm(*hash)
		if err != nil {
			return fmt.Errorf("--hash: %w", err)
		}
		cfg.HashAlgorithm = h
	}
	if *adminKey != "" {
		k, err := readEd25519(*adminKey)
		if err != nil {
			return fmt.Errorf("--admin-pubkey: %w", err)
		}
		cfg.AdminKey = k
	}
	if *snpRoots != "" {
		data, err := os.ReadFile(*snpRoots)
		if err != nil {
			return fmt.Errorf("--snp-roots: %w", err)
		}
		v, err := snp.New(snp.Options{RootsPEM: data, Product: *snpProduct})
		if err != nil {
			return fmt.Errorf("--snp-roots: %w", err)
		}
		cfg.Verifiers["snp"] = v
	}
	if *tdxRoot != "" {
		data, err := os.ReadFile(*tdxRoot)
		if err != nil {
			return fmt.Errorf("--tdx-root: %w", err)
		}
		v, err := tdx.New(tdx.Options{RootPEM: data})
		if err != nil {
			return fmt.Errorf("--tdx-root: %w", err)
		}
		cfg.Verifiers["tdx"] = v
	}
	if *tpmAKs != "" {
		data, err := os.ReadFile(*tpmAKs)
		if err != nil {
			return fmt.Errorf("--tpm-ak: %w", err)
		}
		v, err := tpm.New(tpm.Options{TrustedAKsPEM: data})
		if err != nil {
			return fmt.Errorf("--tpm-ak: %w", err)
		}
		cfg.Verifiers["tpm"] = v
	}
	srv, err := kbs.New(cfg)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	addr := ln.Addr().String()
	if *addrFile != "" {
		if err := atomicfile.WriteFile(*addrFile, []byte(addr), 0o644); err != nil {
			return err
		}
	}
	scheme := "http"
	if *tlsCert != "" {
		scheme = "https"
	}
	tees := make([]string, 0, len(cfg.Verifiers))
	for t := range cfg.Verifiers {
		tees = append(tees, t)
	}
	log.Info("test KBS listening", "url", scheme+"://"+addr, "repo", *repo, "tees", tees)

	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() {
		if *tlsCert != "" {
			errc <- hs.ServeTLS(ln, *tlsCert, *tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	}
}

func readEd25519(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	k, ok := pub.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s holds a %T, not an Ed25519 key", path, pub)
	}
	return k, nil
}
