package imagepull

import (
	"net/url"
	"os"
	"path/filepath"

	"golang.org/x/net/http/httpproxy"
)

// proxyFunc returns the proxy selection of the registry client.
func proxyFunc(httpsProxy, httpProxy, noProxy string) func(*url.URL) (*url.URL, error) {
	cfg := &httpproxy.Config{HTTPSProxy: httpsProxy, HTTPProxy: httpProxy, NoProxy: noProxy}
	return cfg.ProxyFunc()
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
