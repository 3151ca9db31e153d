package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/store"
)

// writeTestPKI writes a CA and a server certificate it signed for
// 127.0.0.1 and localhost into dir; it returns the CA, cert and key paths.
func writeTestPKI(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "capsule test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "capsule api"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", leafDER), write("server.key", "PRIVATE KEY", keyDER)
}

// freePort returns a TCP port nothing listens on at the moment, below
// the kernel's ephemeral range (32768 up): a port the kernel hands out
// for ":0" could be taken by another package's test or an outgoing
// connection between this check and the API binding it, as it was once
// in CI; ports down here are only ever taken by an explicit bind.
func freePort(t *testing.T) int {
	t.Helper()
	for range 200 {
		port := 20000 + mrand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return port
	}
	t.Fatal("no free TCP port in 20000-31999")
	return 0
}

// TestAPIServesTLS runs the API role with http.tls_* set: a gophercloud
// client trusting the CA authenticates, finds https endpoints in the
// catalog and lists servers; a plain-HTTP request gets no API answer.
func TestAPIServesTLS(t *testing.T) {
	dir := t.TempDir()
	caFile, certFile, keyFile := writeTestPKI(t, dir)
	checkAPIServesTLS(t, dir, caFile, certFile, keyFile)
}

// The local CA and certificate deploy/lib.sh makes for allinone.sh --tls
// (cap_tls_pki) serve the API as TestAPIServesTLS wants, keys 0600.
func TestAllInOnePKIServesTLS(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	_, file, _, _ := runtime.Caller(0)
	lib := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "lib.sh")
	pki := filepath.Join(dir, "tls")
	if out, err := exec.Command("bash", "-c", `set -e; . "$1"; cap_tls_pki "$2"; cap_tls_pki "$2"`, "sh", lib, pki).CombinedOutput(); err != nil {
		t.Fatalf("cap_tls_pki: %v\n%s", err, out)
	}
	for name, want := range map[string]os.FileMode{"": 0o700, "ca.key": 0o600, "server.key": 0o600} {
		fi, err := os.Stat(filepath.Join(pki, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s/%s: mode %o, want %o", pki, name, fi.Mode().Perm(), want)
		}
	}
	checkAPIServesTLS(t, dir, filepath.Join(pki, "ca.pem"), filepath.Join(pki, "server.pem"), filepath.Join(pki, "server.key"))
}

func checkAPIServesTLS(t *testing.T, dir, caFile, certFile, keyFile string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, stopAPI := startTLSAPI(ctx, t, dir, caFile, certFile, keyFile)
	defer stopAPI()

	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	authURL := "https://127.0.0.1:" + itoa(cfg.API.IdentityPort) + "/v3"
	var pc *gophercloud.ProviderClient
	deadline := time.Now().Add(10 * time.Second)
	for {
		pc, err = openstack.NewClient(authURL)
		if err != nil {
			t.Fatal(err)
		}
		pc.HTTPClient = http.Client{Timeout: 10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
		err = openstack.Authenticate(ctx, pc, gophercloud.AuthOptions{IdentityEndpoint: authURL, Username: "admin",
			Password: "admin-pw", DomainID: "default", Scope: &gophercloud.AuthScope{ProjectName: "admin", DomainID: "default"}})
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("authenticate over https: %v", err)
	}
	catalog, err := tokens.Get(ctx, mustIdentity(t, pc), pc.TokenID).ExtractServiceCatalog()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range catalog.Entries {
		for _, ep := range e.Endpoints {
			if !strings.HasPrefix(ep.URL, "https://") {
				t.Errorf("catalog endpoint of %s is %s, want https", e.Type, ep.URL)
			}
		}
	}
	comp, err := openstack.NewComputeV2(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	pages, err := servers.List(comp, servers.ListOpts{}).AllPages(ctx)
	if err != nil {
		t.Fatalf("list servers over https: %v", err)
	}
	if all, err := servers.ExtractServers(pages); err != nil || len(all) != 0 {
		t.Fatalf("servers = %v, %v; want none", all, err)
	}

	// Plain HTTP to a TLS listener never reaches the API.
	plain := &http.Client{Timeout: 5 * time.Second}
	for _, port := range []int{cfg.API.IdentityPort, cfg.API.ComputePort, cfg.API.PortalPort} {
		resp, err := plain.Get("http://127.0.0.1:" + itoa(port) + "/")
		if err != nil {
			t.Errorf("plain HTTP to TLS port %d: %v, want Go's 400 for HTTP to an HTTPS server", port, err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), "HTTPS") {
			t.Errorf("plain HTTP to TLS port %d: %d %q, want Go's 400 for HTTP to an HTTPS server", port, resp.StatusCode, body)
		}
	}
	// A client that does not trust the CA is refused the handshake.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(authURL); err == nil {
		t.Error("https with an untrusted CA succeeded")
	}
	// The portal reaches the APIs over https (trusting http.tls_ca_file):
	// a login through it succeeds.
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	portal := &http.Client{Timeout: 10 * time.Second, Jar: jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	portalURL := "https://127.0.0.1:" + itoa(cfg.API.PortalPort)
	resp, err := portal.Get(portalURL + "/login")
	if err != nil {
		t.Fatalf("portal over https: %v", err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("portal login page has no CSRF field:\n%s", page)
	}
	resp, err = portal.PostForm(portalURL+"/login", url.Values{"csrf": {string(m[1])}, "user": {"admin"},
		"password": {"admin-pw"}, "project": {"admin"}})
	if err != nil {
		t.Fatal(err)
	}
	page, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("portal login over https: %d\n%s", resp.StatusCode, page)
	}
}

func mustIdentity(t *testing.T, pc *gophercloud.ProviderClient) *gophercloud.ServiceClient {
	t.Helper()
	c, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func itoa(n int) string { return big.NewInt(int64(n)).String() }

// startTLSAPI bootstraps a database and runs the API role over TLS on free
// ports, and returns its configuration and how to stop it. A port found
// free can still be bound by another test's server before the API binds it
// (other packages' tests and e2e clouds pick from the same range on a
// shared machine; once one answered the portal's port): the API then
// fails at once, and the run is retried on other ports with a fresh
// database, since the catalog names the ports.
func startTLSAPI(ctx context.Context, t *testing.T, dir, caFile, certFile, keyFile string) (config.Config, func()) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool.AppendCertsFromPEM(caPEM)
	for attempt := 1; ; attempt++ {
		sub := filepath.Join(dir, "try"+itoa(attempt))
		if err := os.MkdirAll(sub, 0o700); err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.Database = config.Database{Driver: "sqlite", DSN: filepath.Join(sub, "capsule.db")}
		cfg.API.PublicHost, cfg.API.Listen = "127.0.0.1", "127.0.0.1"
		cfg.API.IdentityPort, cfg.API.ComputePort, cfg.API.ImagePort = freePort(t), freePort(t), freePort(t)
		cfg.API.NetworkPort, cfg.API.PortalPort, cfg.API.VolumePort = freePort(t), freePort(t), freePort(t)
		cfg.HTTP.TLSCertFile, cfg.HTTP.TLSKeyFile, cfg.HTTP.TLSCAFile = certFile, keyFile, caFile
		if err := bootstrap(ctx, cfg, []string{"-admin-password", "admin-pw", "-demo-password", "demo-pw"}, log); err != nil {
			t.Fatal(err)
		}
		st, err := store.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
		if err != nil {
			t.Fatal(err)
		}
		apiCtx, stopAPI := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- runAPI(apiCtx, cfg, &deps{st: st, bus: bus.NewMem()}, log) }()
		ports := []int{cfg.API.IdentityPort, cfg.API.ComputePort, cfg.API.ImagePort, cfg.API.NetworkPort, cfg.API.PortalPort, cfg.API.VolumePort}
		err = waitServingTLS(ctx, ports, pool, done)
		if err == nil {
			return cfg, func() {
				stopAPI()
				if err := <-done; err != nil {
					t.Errorf("runAPI: %v", err)
				}
				st.Close()
			}
		}
		stopAPI()
		st.Close()
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("runAPI: %v", err)
		}
		t.Logf("another server took a port first (%v): again on other ports", err)
	}
}

// waitServingTLS waits until every port completes a TLS handshake with a
// certificate of the test's CA (this API, not another test's server), or
// the API ends (its error) or ctx does.
func waitServingTLS(ctx context.Context, ports []int, pool *x509.CertPool, done <-chan error) error {
	for {
		ready := true
		for _, p := range ports {
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", "127.0.0.1:"+itoa(p),
				&tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
			if err != nil {
				ready = false
				break
			}
			c.Close()
		}
		if ready {
			return nil
		}
		select {
		case err := <-done:
			if err == nil {
				err = errors.New("the API role returned before serving")
			}
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
