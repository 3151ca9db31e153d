package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
)

// caTLS returns the TLS config trusting the system's roots plus the CA
// certificates (PEM) of caFile, as the openstack CLI does with OS_CACERT.
func caTLS(caFile string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("OS_CACERT: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("OS_CACERT: no PEM certificate in %s", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// authenticatedClient authenticates ao with a client using tc for https
// endpoints (nil: Go's defaults) that keeps up to 64 idle connections.
func authenticatedClient(ctx context.Context, ao gophercloud.AuthOptions, tc *tls.Config) (*gophercloud.ProviderClient, error) {
	pc, err := openstack.NewClient(ao.IdentityEndpoint)
	if err != nil {
		return nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// Go keeps two idle connections per host by default: commands that
	// poll several servers at once (bench boot --concurrency, --wait on
	// many) then dialled a new connection for most requests (316 of about
	// 900 GETs at concurrency 20). python-requests, under the openstack
	// CLI, pools ten per host.
	tr.MaxIdleConnsPerHost = 64
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	pc.HTTPClient = http.Client{Transport: tr}
	if err := openstack.Authenticate(ctx, pc, ao); err != nil {
		return nil, err
	}
	return pc, nil
}
