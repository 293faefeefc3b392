package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is a throwaway CA and a server certificate it issued, as files.
type pki struct {
	caPEM   []byte
	caFile  string // the CA certificate (PEM)
	certDir string // holds ca.crt only, for skopeo and certs.d
	crtFile string // server certificate chain (PEM)
	keyFile string // server private key (PEM)
	pair    tls.Certificate
}

// newPKI creates a CA and a server certificate under dir. The certificate
// is valid for localhost, loopback, and the two addresses a QEMU user-mode
// guest uses to reach the host (10.0.2.2, and 10.0.2.100 for a guestfwd).
func newPKI(dir string) (*pki, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "guestd test registry CA"},
		NotBefore:             now.Add(-24 * time.Hour), // tolerate a guest clock that lags
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate server key: %w", err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-24 * time.Hour),
		NotAfter:     now.Add(30 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	for _, ip := range []string{"127.0.0.1", "::1", "10.0.2.2", "10.0.2.100"} {
		srvTmpl.IPAddresses = append(srvTmpl.IPAddresses, net.ParseIP(ip))
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("create server certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		return nil, fmt.Errorf("encode server key: %w", err)
	}

	p := &pki{
		caPEM:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		caFile:  filepath.Join(dir, "ca.pem"),
		certDir: filepath.Join(dir, "certs.d"),
		crtFile: filepath.Join(dir, "server.crt"),
		keyFile: filepath.Join(dir, "server.key"),
	}
	crtPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if p.pair, err = tls.X509KeyPair(crtPEM, keyPEM); err != nil {
		return nil, fmt.Errorf("load server key pair: %w", err)
	}
	if err := os.MkdirAll(p.certDir, 0o755); err != nil {
		return nil, fmt.Errorf("create cert dir %s: %w", p.certDir, err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{p.caFile, p.caPEM, 0o644},
		{filepath.Join(p.certDir, "ca.crt"), p.caPEM, 0o644},
		{p.crtFile, crtPEM, 0o644},
		{p.keyFile, keyPEM, 0o600},
	} {
		if err := os.WriteFile(f.path, f.data, f.mode); err != nil {
			return nil, fmt.Errorf("write %s: %w", f.path, err)
		}
	}
	return p, nil
}
