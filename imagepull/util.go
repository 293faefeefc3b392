package imagepull

import (
	"net/url"

	"golang.org/x/net/http/httpproxy"
)

// proxyFunc returns the proxy selection of the registry client.
func proxyFunc(httpsProxy, httpProxy, noProxy string) func(*url.URL) (*url.URL, error) {
	cfg := &httpproxy.Config{HTTPSProxy: httpsProxy, HTTPProxy: httpProxy, NoProxy: noProxy}
	return cfg.ProxyFunc()
}
