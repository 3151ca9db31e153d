package apifuzz

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/agent"
	"github.com/capsule-cloud/capsule/api-server/compute"
	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/api-server/identity"
	"github.com/capsule-cloud/capsule/api-server/image"
	"github.com/capsule-cloud/capsule/api-server/network"
	"github.com/capsule-cloud/capsule/api-server/volume"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/conductor"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/drivers/fake"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/registry"
	"github.com/capsule-cloud/capsule/scheduler"
	"github.com/capsule-cloud/capsule/store"
)

// Cloud is a whole Capsule control plane in this process, as `capsuled
// all` runs it but on SQLite in a directory of its own, the in-memory bus
// and one compute agent with the fake driver: the four API services listen
// on loopback ports, so a fuzzer drives them over real HTTP, while panics,
// 5xx log lines, goroutines and heap are read here directly.
type Cloud struct {
	// IdentityURL is the Keystone v3 endpoint (…/v3); the catalog of a
	// token names the other services.
	IdentityURL string
	// AdminPassword and DemoPassword are those of users admin (project
	// admin) and demo (project demo, member), as the bootstrap makes them.
	AdminPassword, DemoPassword string

	bus     *bus.Mem
	st      *store.Store
	servers []*http.Server
	cancel  context.CancelFunc
	done    sync.WaitGroup
	events  *Events
}

// Events counts what the cloud's own logs say went wrong: handler panics
// (net/http's "panic serving", or a role's recovered panic) and requests
// answered with a 5xx (the access log's error lines).
type Events struct {
	mu       sync.Mutex
	panics   []string
	errLines []string
	nErr     int
}

const keepLines = 20

func (e *Events) addPanic(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.panics) < keepLines {
		e.panics = append(e.panics, s)
	}
}

// Panics returns the panics logged so far (the first few).
func (e *Events) Panics() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.panics...)
}

// ErrorLines returns how many error-level lines the cloud logged and the
// first few of them.
func (e *Events) ErrorLines() (int, []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nErr, append([]string(nil), e.errLines...)
}

// panicWriter receives net/http's server error log.
type panicWriter struct{ e *Events }

func (p panicWriter) Write(b []byte) (int, error) {
	if s := string(b); strings.Contains(s, "panic") {
		p.e.addPanic(s)
	}
	return len(b), nil
}

// errorHandler is the cloud's slog handler: it drops everything below
// error and remembers the error lines (a 5xx's access-log line, a role's
// failure) for the report.
type errorHandler struct {
	e     *Events
	attrs []slog.Attr
}

func (h errorHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelError }
func (h errorHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	for _, a := range h.attrs {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
	}
	r.Attrs(func(a slog.Attr) bool { fmt.Fprintf(&b, " %s=%v", a.Key, a.Value); return true })
	s := b.String()
	h.e.mu.Lock()
	defer h.e.mu.Unlock()
	h.e.nErr++
	if len(h.e.errLines) < keepLines {
		h.e.errLines = append(h.e.errLines, s)
	}
	if strings.Contains(s, "panic") && len(h.e.panics) < keepLines {
		h.e.panics = append(h.e.panics, s)
	}
	return nil
}
func (h errorHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return errorHandler{e: h.e, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}
func (h errorHandler) WithGroup(string) slog.Handler { return h }

// StartCloud bootstraps and starts a cloud with its database in dir. It
// runs until Close.
func StartCloud(ctx context.Context, dir string) (*Cloud, error) {
	ev := &Events{}
	lg := slog.New(errorHandler{e: ev})
	st, err := store.Open(ctx, "sqlite", filepath.Join(dir, "capsule.db"))
	if err != nil {
		return nil, err
	}
	c := &Cloud{AdminPassword: "fuzz-admin-pass", DemoPassword: "fuzz-demo-pass", st: st, events: ev,
		bus: bus.NewMem(bus.MemLogger(lg), bus.MemNoHistory())}
	if err := bootstrap(ctx, st, c.AdminPassword, c.DemoPassword); err != nil {
		c.closeStores()
		return nil, err
	}
	cfg := config.Default()
	cfg.Database = config.Database{Driver: "sqlite", DSN: filepath.Join(dir, "capsule.db")}
	cfg.Agent.Host, cfg.Agent.Driver, cfg.Agent.MetricsListen = "fuzz-host", "fake", ""
	cfg.Agent.HeartbeatInterval = 2 * time.Second
	cfg.Registry.Address = "registry.invalid:5050"

	// Listen first: the catalog needs the ports.
	lns := make([]net.Listener, 5)
	for i := range lns {
		if lns[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			for _, l := range lns[:i] {
				l.Close()
			}
			c.closeStores()
			return nil, err
		}
	}
	port := func(i int) int { return lns[i].Addr().(*net.TCPAddr).Port }
	ids := identity.New(st, identity.Options{PublicHost: "127.0.0.1", Logger: lg, PasswordHashRounds: identity.MinPasswordHashRounds,
		Ports: identity.Ports{Identity: port(0), Compute: port(1), Image: port(2), Network: port(3), Volume: port(4)}})
	img := image.New(st, image.Options{Validator: ids, Logger: lg, Data: newMemData()})
	comp := compute.New(st, c.bus, compute.Options{PublicHost: "127.0.0.1", ComputePort: port(1), ImagePort: port(2),
		CallTimeout: 5 * time.Second, Validator: ids, Log: lg, RegistryAddress: cfg.Registry.Address, Images: img})
	netw := network.New(ids, network.WithStore(st), network.WithConfig(cfg.Network), network.WithLogger(lg))
	vol := volume.New(st, c.bus, volume.Options{Validator: ids, Log: lg, Config: cfg.Volume})
	// The listeners capsuled serves (cmd/capsuled runAPI): body and header
	// limits and timeouts included, with the default limits.
	errLog := log.New(panicWriter{e: ev}, "", 0)
	for i, l := range []httpapi.Listener{
		{TooLarge: ids.TooLarge, Handler: httpapi.AccessLog(lg, "identity", httpapi.WithRequestID(ids.Handler()))},
		{TooLarge: comp.TooLarge, Handler: httpapi.AccessLog(lg, "compute", httpapi.WithRequestID(comp.Handler(), "x-compute-request-id"))},
		{TooLarge: img.TooLarge, Streaming: image.IsDataTransfer, Handler: httpapi.AccessLog(lg, "image", httpapi.WithRequestID(img.Handler()))},
		{TooLarge: netw.TooLarge, Handler: httpapi.AccessLog(lg, "network", httpapi.WithRequestID(netw.Handler()))},
		{TooLarge: vol.TooLarge, Handler: httpapi.AccessLog(lg, "volume", httpapi.WithRequestID(vol.Handler(), "x-openstack-request-id"))},
	} {
		l.Limits = httpapi.DefaultLimits()
		srv, ln := httpapi.NewServer(l), lns[i]
		srv.ErrorLog = errLog
		c.servers = append(c.servers, srv)
		c.done.Add(1)
		go func() { defer c.done.Done(); _ = srv.Serve(ln) }()
	}
	c.IdentityURL = fmt.Sprintf("http://127.0.0.1:%d/v3", port(0))

	rctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	reg := registry.New(cfg.Registry)
	cond := conductor.New(st, c.bus, cfg.Conductor, cfg.Scheduler.MaxAttempts, lg)
	cond.SetMigrations(migrate.New(migrate.Options{Store: st, Bus: c.bus, Scheduler: scheduler.New(st, c.bus, cfg.Scheduler, lg),
		Registry: reg, RegistryAddress: cfg.Registry.Address, StepTimeout: time.Minute, Log: lg}))
	cond.SetRegistry(reg)
	ag := agent.New(cfg.Agent, fake.New(), c.bus, lg, agent.WithPlumber(noPlumbing{}))
	for _, run := range []func(context.Context) error{cond.Run, scheduler.New(st, c.bus, cfg.Scheduler, lg).Run, ag.Run} {
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			if err := run(rctx); err != nil && !errors.Is(err, context.Canceled) {
				lg.Error("role stopped", "err", err)
			}
		}()
	}
	if err := c.waitHost(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// waitHost waits for the agent's first heartbeat, so servers can be
// scheduled.
func (c *Cloud) waitHost(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		var n int64
		if err := c.st.WithContext(ctx).Model(&store.Service{}).Count(&n).Error; err == nil && n > 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the fake compute host did not report: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Events returns what the cloud's logs reported.
func (c *Cloud) Events() *Events { return c.events }

// Settle waits until the bus is idle (every message the requests caused
// was handled), up to d.
func (c *Cloud) Settle(d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	_ = c.bus.WaitIdle(ctx)
}

// Close stops the roles and the API servers and closes the database.
func (c *Cloud) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range c.servers {
		_ = s.Shutdown(ctx)
	}
	if c.cancel != nil {
		c.cancel()
	}
	_ = c.bus.Close()
	c.done.Wait()
	c.closeStores()
}

func (c *Cloud) closeStores() {
	_ = c.bus.Close()
	_ = c.st.Close()
}

// bootstrap makes what `capsuled bootstrap` makes: roles, the admin and
// demo projects and users, the service project, three flavors and a
// public base image.
func bootstrap(ctx context.Context, st *store.Store, adminPass, demoPass string) error {
	for _, r := range []string{"admin", "member", "reader"} {
		if _, err := identity.EnsureRole(ctx, st, r); err != nil {
			return err
		}
	}
	var adminProject string
	for _, a := range []struct{ user, pass, project string }{{"admin", adminPass, "admin"}, {"demo", demoPass, "demo"}} {
		p, err := identity.EnsureProject(ctx, st, a.project, a.project+" project")
		if err != nil {
			return err
		}
		u, err := identity.EnsureUser(ctx, st, a.user, a.pass, p.ID, identity.MinPasswordHashRounds)
		if err != nil {
			return err
		}
		roles := []string{"member", "reader"}
		if a.user == "admin" {
			roles, adminProject = append(roles, "admin"), p.ID
		}
		for _, r := range roles {
			if err := identity.Grant(ctx, st, u.ID, p.ID, r); err != nil {
				return err
			}
		}
	}
	if _, err := identity.EnsureProject(ctx, st, "service", "service project"); err != nil {
		return err
	}
	for _, f := range []store.Flavor{
		{FlavorID: "1", Name: "m1.tiny", VCPUs: 1, MemoryMB: 128, RootGB: 1},
		{FlavorID: "2", Name: "m1.small", VCPUs: 1, MemoryMB: 512, RootGB: 5},
	} {
		f.RxtxFactor, f.IsPublic = 1, true
		if err := st.WithContext(ctx).Create(&f).Error; err != nil {
			return fmt.Errorf("bootstrap flavor %s: %w", f.Name, err)
		}
	}
	_, err := image.Register(ctx, st, "busybox", "registry.invalid:5050/capsule/busybox:latest", 1<<20, adminProject, true)
	return err
}

// noPlumbing is the fake driver's network plumbing: its namespaces are
// names, there is nothing to wire.
type noPlumbing struct{}

func (noPlumbing) Plug(context.Context, string, string, []protocol.NIC) error { return nil }
func (noPlumbing) Unplug(context.Context, string, []protocol.NIC) error       { return nil }
func (noPlumbing) UnplugInstance(context.Context, string) error               { return nil }
func (noPlumbing) RemoveOrphans(context.Context, func(string) bool) ([]string, error) {
	return nil, nil
}

// memData is the image service's data backend in the in-process cloud:
// it keeps a digest and at most maxKept bytes of each upload (the fuzzer
// uploads garbage; a registry is not what is under test).
type memData struct {
	mu   sync.Mutex
	data map[string][]byte
}

const maxKept = 4096

func newMemData() *memData { return &memData{data: map[string][]byte{}} }

func (m *memData) Put(_ context.Context, img store.Image, r io.Reader) (string, error) {
	h := sha256.New()
	var head bytes.Buffer
	if _, err := io.Copy(io.MultiWriter(h, &limitedBuffer{b: &head, n: maxKept}), r); err != nil {
		return "", errdefs.InvalidArgument("read image data: " + err.Error())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.data[img.ID] = head.Bytes()
	return "registry.invalid:5050/fuzz/" + img.ID + "@sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

func (m *memData) Get(_ context.Context, img store.Image) (io.ReadCloser, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// The image's size is what it answers with: the kept head, then
	// zeros (a server snapshot the fake driver made has no head at all).
	var size int64
	if img.Size != nil {
		size = max(*img.Size, 0)
	}
	b := m.data[img.ID]
	return io.NopCloser(io.LimitReader(io.MultiReader(bytes.NewReader(b), zeros{}), size)), nil
}

func (m *memData) Delete(_ context.Context, img store.Image) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.data, img.ID)
	return nil
}

// limitedBuffer keeps the first n bytes written to it and drops the rest.
type limitedBuffer struct {
	b *bytes.Buffer
	n int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.n - l.b.Len(); room > 0 {
		l.b.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
