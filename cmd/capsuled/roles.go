package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/capsule-cloud/capsule/agent"
	"github.com/capsule-cloud/capsule/api-server/compute"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/api-server/portal"
	"github.com/capsule-cloud/capsule/api-server/volume"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/console"
	"github.com/capsule-cloud/capsule/drivers"
	"github.com/capsule-cloud/capsule/drivers/docker"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/metaproxy"
	"github.com/capsule-cloud/capsule/metrics"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/ovs"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
	"github.com/capsule-cloud/capsule/vif"
	hostvolume "github.com/capsule-cloud/capsule/volume"
)

// deps are the connections roles share.
type deps struct {
	st  *store.Store // nil for an agent-only process: agents hold no DB credentials
	bus bus.Bus
}

func (d *deps) close() {
	if d.bus != nil {
		_ = d.bus.Close()
	}
	if d.st != nil {
		_ = d.st.Close()
	}
}

func connect(ctx context.Context, cfg config.Config, needDB bool, log *slog.Logger) (*deps, error) {
	d := &deps{}
	if needDB {
		st, err := store.Open(ctx, cfg.Database.Driver, cfg.Database.DSN)
		if err != nil {
			return nil, err
		}
		d.st = st
	}
	// A process without the database is a compute host's agent: its
	// broker user may not configure the control plane's exchange and
	// queues (docs/operations.md, one RabbitMQ user per compute host).
	b, err := bus.DialAMQP(ctx, cfg.Bus.URL, bus.AMQPOptions{Prefetch: cfg.Bus.Prefetch, QueueType: cfg.Bus.QueueType,
		Logger: log, Passive: !needDB})
	if err != nil {
		d.close()
		return nil, fmt.Errorf("connect to the bus: %w", err)
	}
	d.bus = b
	return d, nil
}

func runConductor(ctx context.Context, cfg config.Config, d *deps, log *slog.Logger) error {
	c := conductor.New(d.st, d.bus, cfg.Conductor, cfg.Scheduler.MaxAttempts, log)
	// Cold migrations pick their target with the scheduler's filters and
	// weigher and delete their commit from the private registry.
	c.SetMigrations(migrate.New(migrate.Options{Store: d.st, Bus: d.bus,
		Scheduler: scheduler.New(d.st, d.bus, cfg.Scheduler, log), Registry: registry.New(cfg.Registry),
		RegistryAddress: cfg.Registry.Address, StepTimeout: cfg.Conductor.MigrationStepTimeout, Precopy: cfg.Conductor.MigrationPrecopy, Log: log}))
	// Backups rotated out lose their registry tags too.
	c.SetRegistry(registry.New(cfg.Registry))
	c.SetVolumeTimeouts(volumeTimeouts(cfg))
	return c.Run(ctx)
}

// volumeTimeouts are the deadlines of volume attach and detach work, the
// same for the API that casts it and the conductor that sweeps it.
func volumeTimeouts(cfg config.Config) instance.VolumeTimeouts {
	return instance.VolumeTimeouts{Attach: cfg.Volume.AttachTimeout, Move: cfg.Volume.MoveTimeout}
}

func runScheduler(ctx context.Context, cfg config.Config, d *deps, log *slog.Logger) error {
	return scheduler.New(d.st, d.bus, cfg.Scheduler, log).Run(ctx)
}

func newDriver(ctx context.Context, cfg config.Config) (drivers.Driver, error) {
	switch cfg.Agent.Driver {
	case "fake":
		return fake.New(), nil
	case "docker", "":
		opts := docker.Options{Host: cfg.Agent.DockerHost, Owner: cfg.Agent.Host, StopTimeout: cfg.Agent.StopTimeout,
			SandboxImage: sandboxImage(cfg), LXCFS: cfg.Agent.LXCFS, CPUDedicatedSet: cfg.Agent.CPUDedicatedSet,
			NetworkMode: cfg.Agent.NetworkMode, NetnsDir: cfg.Agent.NetnsDir, Runtime: cfg.Agent.OCIRuntime}
		if cfg.Registry.Username != "" {
			opts.RegistryAuth = &docker.RegistryAuth{Username: cfg.Registry.Username, Password: cfg.Registry.Password,
				ServerAddress: cfg.Registry.Address}
		}
		return docker.New(ctx, opts)
	}
	return nil, fmt.Errorf("unknown agent driver %q (want docker or fake)", cfg.Agent.Driver)
}

// sandboxImage is the infra image of servers' sandboxes: the configured
// one, else the base image every Capsule registry holds (its busybox has
// the sleep the sandbox runs).
func sandboxImage(cfg config.Config) string {
	if cfg.Agent.SandboxImage != "" {
		return cfg.Agent.SandboxImage
	}
	return cfg.Registry.Address + "/capsule/busybox:latest"
}

func runAgent(ctx context.Context, cfg config.Config, d *deps, log *slog.Logger) error {
	drv, err := newDriver(ctx, cfg)
	if err != nil {
		return err
	}
	var opts []agent.Option
	p, vp := newPlumber(ctx, cfg, log)
	if p != nil {
		opts = append(opts, agent.WithPlumber(p))
	}
	// The console proxy the agent dials back to may serve TLS under the
	// cloud's own CA.
	ctls, err := httpapi.ClientTLS(cfg.HTTP.TLSCAFile)
	if err != nil {
		return fmt.Errorf("http.tls_ca_file: %w", err)
	}
	opts = append(opts, agent.WithConsoleTLS(ctls))
	if cfg.Agent.Driver != "fake" {
		vols, err := newVolumes(cfg, log)
		if err != nil {
			return err
		}
		opts = append(opts, agent.WithVolumes(vols, registry.New(cfg.Registry)))
	}
	ag := agent.New(cfg.Agent, drv, d.bus, log, opts...)
	if vp != nil && !cfg.Agent.MetadataDisabled {
		stop := serveMetadata(ctx, cfg, vp, ag, log)
		defer stop()
	}
	if cfg.Agent.MetricsListen != "" {
		defer serveAgentMetrics(ctx, cfg, ag, p != nil, log)()
	}
	return ag.Run(ctx)
}

// serveAgentMetrics serves the agent's /metrics on agent.metrics_listen
// until ctx ends or the returned stop is called (stop waits for the
// endpoint to close). withOVS: the host plumbs with Open vSwitch, whose
// health is then exported.
func serveAgentMetrics(ctx context.Context, cfg config.Config, ag *agent.Agent, withOVS bool, log *slog.Logger) (stop func()) {
	var ovsCheck func(context.Context) error
	if withOVS {
		o := ovs.New(ovs.Options{Logger: log, Timeout: 5 * time.Second})
		ovsCheck = func(ctx context.Context) error { _, err := o.Vsctl(ctx, "show"); return err }
	}
	reg := ag.MetricsRegistry(ovsCheck)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Metrics are not worth refusing to run servers for: a busy port
		// is logged and the agent serves on.
		tlsConf, err := serverTLS(cfg.HTTP)
		if err != nil {
			log.Error("agent metrics endpoint not served", "listen", cfg.Agent.MetricsListen, "err", err)
			return
		}
		srv := httpapi.NewServer(httpapi.Listener{Addr: cfg.Agent.MetricsListen, Limits: httpLimits(cfg.HTTP),
			TLS: tlsConf, Handler: metrics.Mux(reg)})
		if err := metrics.Serve(ctx, srv, log); err != nil {
			log.Error("agent metrics endpoint not served", "listen", cfg.Agent.MetricsListen, "err", err)
		}
	}()
	log.Info("agent metrics endpoint", "listen", cfg.Agent.MetricsListen)
	return func() { cancel(); <-done }
}

// newPlumber returns the agent's network plumbing: Open vSwitch through
// vif for the docker driver, nothing to do for the fake one (its
// namespaces are names). Without Open vSwitch it returns nil and the agent
// refuses servers with NICs (it never starts one without its network);
// servers without NICs still run.
func newPlumber(ctx context.Context, cfg config.Config, log *slog.Logger) (agent.Plumber, *vif.Plumber) {
	if cfg.Agent.Driver == "fake" {
		return noopPlumber{}, nil
	}
	if _, err := exec.LookPath("ovs-vsctl"); err != nil {
		log.Warn("Open vSwitch (ovs-vsctl) not found: servers with NICs cannot be built on this host", "err", err)
		return nil, nil
	}
	p := vif.New(ovs.New(ovs.Options{Logger: log}), cfg.Agent.BridgeMappings, log)
	if !cfg.Agent.MetadataDisabled {
		p.WithMetadata()
	}
	// The mapped bridges must exist before a port can be plugged; an
	// error here only concerns servers with NICs, so the agent still runs
	// and each such build reports the plumbing error.
	ectx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.EnsureBridges(ectx); err != nil {
		log.Error("cannot set up the bridges of agent.bridge_mappings: servers with NICs will fail to plug", "err", err,
			"bridge_mappings", cfg.Agent.BridgeMappings)
	}
	return agent.VIF(p), p
}

// serveMetadata runs the host's metadata service (package metaproxy) on
// every mapped bridge until ctx ends or the returned stop is called (stop
// waits for it to close, taking its ports' namespaces with it).
func serveMetadata(ctx context.Context, cfg config.Config, p *vif.Plumber, ag *agent.Agent, log *slog.Logger) (stop func()) {
	ttl := cfg.Agent.MetadataCacheTTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	srv := metaproxy.New(metadataPorts{p}, ag.InstanceMetadata, ag.SetMetadataPassword, ttl, log)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

// metadataPorts adapts vif's metadata listener to metaproxy.Ports.
type metadataPorts struct{ *vif.Plumber }

func (m metadataPorts) ListenMetadata(ctx context.Context, bridge string) (net.Listener, error) {
	l, err := m.Plumber.ListenMetadata(ctx, bridge)
	if err != nil {
		return nil, err
	}
	return l, nil
}

// noopPlumber is the fake driver's plumbing: there is no namespace to wire.
type noopPlumber struct{}

func (noopPlumber) Plug(context.Context, string, string, []protocol.NIC) error { return nil }
func (noopPlumber) Unplug(context.Context, string, []protocol.NIC) error       { return nil }
func (noopPlumber) UnplugInstance(context.Context, string) error               { return nil }
func (noopPlumber) RemoveOrphans(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}

// volumeURL is the Block Storage API's base for the portal, "" when the
// cloud serves none.
func volumeURL(scheme, host string, port int) string {
	if port <= 0 {
		return ""
	}
	return httpapi.HostURL(scheme, host, port)
}

// runAPI serves each OpenStack service on its conventional port.
func runAPI(ctx context.Context, cfg config.Config, d *deps, log *slog.Logger) error {
	a := cfg.API
	var credKey *identity.CredentialKey
	if a.CredentialKeyFile != "" {
		var err error
		if credKey, err = identity.LoadCredentialKey(a.CredentialKeyFile); err != nil {
			return err
		}
	}
	ids := identity.New(d.st, identity.Options{PublicHost: a.PublicHost, Region: cfg.Region, TokenTTL: a.TokenTTL, Logger: log,
		CredentialKey:      credKey,
		Ports:              identity.Ports{Identity: a.IdentityPort, Compute: a.ComputePort, Image: a.ImagePort, Network: a.NetworkPort, Volume: a.VolumePort},
		TLS:                cfg.HTTP.TLS(),
		AdminProject:       a.AdminProject,
		PasswordHashRounds: a.PasswordHashRounds,
		Lockout: identity.Lockout{UserAttempts: a.LockoutFailureAttempts, SourceAttempts: a.LockoutSourceFailureAttempts,
			Duration: a.LockoutDuration}})
	go ids.PurgeTokensEvery(ctx, a.TokenPurgeInterval)
	img := image.New(d.st, image.Options{Validator: ids, Logger: log, Data: image.NewRegistryData(cfg.Registry),
		MaxImageBytes: a.ImageSizeCap, UploadTimeout: a.ImageUploadTimeout})
	proxy := newConsoleProxy(cfg, d, log)
	var consoles compute.ConsoleIssuer
	if proxy != nil {
		consoles = proxy
	}
	comp := compute.New(d.st, d.bus, compute.Options{Consoles: consoles, PublicHost: a.PublicHost, ComputePort: a.ComputePort, ImagePort: a.ImagePort,
		CallTimeout: a.CallTimeout, ForceConfigDrive: a.ForceConfigDrive,
		NoInstancePassword: a.EnableInstancePassword != nil && !*a.EnableInstancePassword, ServiceDownTime: cfg.Scheduler.ServiceDownTime, Validator: ids, Log: log,
		RegistryAddress: cfg.Registry.Address, AfterCommit: crashAfterCommit(log), Images: img, Registry: registry.New(cfg.Registry),
		DefaultQuota:     compute.Quota{Instances: cfg.Quota.Instances, Cores: cfg.Quota.Cores, RAM: cfg.Quota.RAMMB},
		DefaultPortQuota: cfg.Network.Quota.Ports, VolumeBackend: cfg.Volume.Backend, VolumeZone: cfg.Volume.AvailabilityZone,
		VolumeQuota: map[string]int{store.QuotaVolumes: cfg.Volume.Quota.Volumes, store.QuotaGigabytes: cfg.Volume.Quota.Gigabytes,
			store.QuotaSnapshots: cfg.Volume.Quota.Snapshots},
		VolumeTimeouts: volumeTimeouts(cfg)})
	netw := network.New(ids, network.WithStore(d.st), network.WithConfig(cfg.Network), network.WithLogger(log),
		network.WithPortDetacher(comp), network.WithPortUpdater(comp), network.WithSecurityGroupNotifier(comp))
	// The portal is a client of the APIs above, reaching them where they
	// listen on this host (the catalog's public host may not resolve here).
	local, scheme := localHost(a.Listen), "http"
	if cfg.HTTP.TLS() {
		scheme = "https"
	}
	client, err := apiClient(cfg.HTTP)
	if err != nil {
		return err
	}
	web, err := portal.New(portal.Options{Logger: log, AdminProject: a.AdminProject, Client: client, Endpoints: portal.Endpoints{
		Identity: httpapi.HostURL(scheme, local, a.IdentityPort) + "/v3",
		Compute:  httpapi.HostURL(scheme, local, a.ComputePort) + "/v2.1",
		Image:    httpapi.HostURL(scheme, local, a.ImagePort), Network: httpapi.HostURL(scheme, local, a.NetworkPort),
		Volume: volumeURL(scheme, local, a.VolumePort)}})
	if err != nil {
		return err
	}
	lim := httpLimits(cfg.HTTP)
	tlsConf, err := serverTLS(cfg.HTTP)
	if err != nil {
		return err
	}
	// The serial console proxy shares the compute listener (and so its
	// TLS); its connections are exempt from the API's timeouts.
	computeHandler := httpapi.AccessLog(log, "compute", httpapi.WithRequestID(comp.Handler(), "x-compute-request-id"))
	if proxy != nil {
		computeHandler = consoleRouter(proxy, computeHandler)
	}
	servers := []*http.Server{
		httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.IdentityPort), Limits: lim, TLS: tlsConf, TooLarge: ids.TooLarge,
			Handler: httpapi.AccessLog(log, "identity", httpapi.WithRequestID(ids.Handler()))}),
		httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.ComputePort), Limits: lim, TLS: tlsConf, TooLarge: comp.TooLarge,
			Streaming: console.IsConsole, Handler: computeHandler}),
		httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.ImagePort), Limits: lim, TLS: tlsConf, TooLarge: img.TooLarge,
			Streaming: image.IsDataTransfer, Handler: httpapi.AccessLog(log, "image", httpapi.WithRequestID(img.Handler()))}),
		httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.NetworkPort), Limits: lim, TLS: tlsConf, TooLarge: netw.TooLarge,
			Handler: httpapi.AccessLog(log, "network", httpapi.WithRequestID(netw.Handler()))}),
	}
	if a.VolumePort > 0 {
		vol := volume.New(d.st, d.bus, volume.Options{Validator: ids, Log: log, Config: cfg.Volume, ServiceDownTime: cfg.Scheduler.ServiceDownTime})
		servers = append(servers, httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.VolumePort), Limits: lim, TLS: tlsConf,
			TooLarge: vol.TooLarge, Handler: httpapi.AccessLog(log, "volume", httpapi.WithRequestID(vol.Handler(), "x-openstack-request-id"))}))
	}
	if a.PortalPort > 0 {
		servers = append(servers, httpapi.NewServer(httpapi.Listener{Addr: hostPort(a.Listen, a.PortalPort), Limits: lim, TLS: tlsConf,
			Streaming: portal.IsUpload, Handler: httpapi.AccessLog(log, "portal", web.Handler())}))
	}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		ln, err := listen(srv.Addr)
		if err != nil {
			return err
		}
		log.Info("API listening", "addr", srv.Addr, "tls", srv.TLSConfig != nil)
		go func(srv *http.Server) {
			if err := httpapi.Serve(srv, ln); err != nil {
				errc <- fmt.Errorf("serve %s: %w", srv.Addr, err)
			}
		}(srv)
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutdown)
	}
	return nil
}

// newConsoleProxy is the serial console proxy of an API process, nil
// when api.serial_console_disabled.
func newConsoleProxy(cfg config.Config, d *deps, log *slog.Logger) *console.Proxy {
	a := cfg.API
	if a.SerialConsoleDisabled {
		return nil
	}
	ws, web := "ws", "http"
	if cfg.HTTP.TLS() {
		ws, web = "wss", "https"
	}
	public, internal := a.ConsolePublicURL, a.ConsoleInternalURL
	if public == "" {
		public = httpapi.HostURL(ws, a.PublicHost, a.ComputePort) + console.PathPrefix
	}
	if internal == "" {
		internal = httpapi.HostURL(web, a.PublicHost, a.ComputePort) + console.PathPrefix
	}
	return console.New(console.Options{Store: d.st, Bus: d.bus, PublicURL: strings.TrimSuffix(public, "/"),
		InternalURL: strings.TrimSuffix(internal, "/"), TokenTTL: a.ConsoleTokenTTL, AttachTimeout: a.CallTimeout, Log: log})
}

// consoleRouter sends the console proxy's requests to it, the rest to
// api: the proxy's websockets need the bare connection (no access-log
// wrapper) and carry no API token.
func consoleRouter(proxy http.Handler, api http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if console.IsConsole(r) {
			proxy.ServeHTTP(w, r)
			return
		}
		api.ServeHTTP(w, r)
	})
}

// localHost is the address this host's API listeners answer on: the bind
// address, or loopback when they bind every address.
func localHost(listen string) string {
	if ip := net.ParseIP(listen); listen == "" || (ip != nil && ip.IsUnspecified()) {
		return "127.0.0.1"
	}
	return listen
}

func hostPort(host string, port int) string { return net.JoinHostPort(host, strconv.Itoa(port)) }

// httpLimits are the limits of every listener, from the config's http
// section (zero fields take httpapi's defaults).
func httpLimits(c config.HTTP) httpapi.Limits {
	return httpapi.Limits{ReadHeaderTimeout: c.ReadHeaderTimeout, ReadTimeout: c.ReadTimeout, WriteTimeout: c.WriteTimeout,
		IdleTimeout: c.IdleTimeout, MaxHeaderBytes: c.MaxHeaderBytes, MaxBodyBytes: c.MaxBodyBytes}
}

// serverTLS is the TLS config of every listener: nil (plain HTTP) unless
// the http section names a certificate and key.
func serverTLS(c config.HTTP) (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	return httpapi.LoadTLS(c.TLSCertFile, c.TLSKeyFile)
}

// apiClient is the HTTP client of a Capsule role calling the APIs (the
// portal): it trusts http.tls_ca_file besides the system's roots.
func apiClient(c config.HTTP) (*http.Client, error) {
	tc, err := httpapi.ClientTLS(c.TLSCAFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls_ca_file: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	return &http.Client{Timeout: 60 * time.Second, Transport: tr}, nil
}

func listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return ln, nil
}

// crashAfterCommitEnv names a file whose presence makes the API process
// kill itself (SIGKILL) right after it committed a task and before it
// published the task's message, once (the file is removed first): the
// end-to-end tests' kill point for the outbox. Unset, nothing happens.
const crashAfterCommitEnv = "CAPSULE_TEST_CRASH_AFTER_COMMIT"

// crashAfterCommit is the compute API's AfterCommit hook that
// crashAfterCommitEnv asks for (nil when it is unset).
func crashAfterCommit(log *slog.Logger) func() {
	path := os.Getenv(crashAfterCommitEnv)
	if path == "" {
		return nil
	}
	log.Warn("test kill point armed: the API dies after a commit when this file exists", "file", path)
	return func() {
		if os.Remove(path) == nil {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// newVolumes is the agent's volume manager (docs/operations.md "Volumes").
func newVolumes(cfg config.Config, log *slog.Logger) (*hostvolume.Manager, error) {
	mountDir := cfg.Agent.VolumeMountDir
	if mountDir == "" {
		// Per host: simulated hosts of one machine mount apart.
		mountDir = filepath.Join(hostvolume.DefaultMountDir, cfg.Agent.Host)
	}
	return hostvolume.New(hostvolume.Config{LocalDir: cfg.Agent.VolumeDir, SharedDir: cfg.Agent.SharedVolumeDir, MountDir: mountDir}, log)
}
