// Package metaproxy is the metadata service on a compute host: an HTTP
// server on 169.254.169.254:80 in a namespace of its own behind each
// mapped bridge's metadata port (vif.ListenMetadata), which names the
// server behind each connection by the OVS port it came in on (vif's
// per-port flows rewrite the source to that port's token) and serves that
// server's own tree (package metadata), fetched from the control plane and
// kept a few seconds.
package metaproxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/metadata"
	"github.com/capsule-cloud/capsule/protocol"
)

// Ports is the host's metadata plumbing (vif.Plumber).
type Ports interface {
	Bridges() []string
	// ListenMetadata makes bridge's metadata port and listens behind it.
	ListenMetadata(ctx context.Context, bridge string) (net.Listener, error)
	// MetadataPortHealthy says whether the port is still in place.
	MetadataPortHealthy(ctx context.Context, bridge string) (bool, error)
	// MetadataClient names the server behind a connection from remote.
	MetadataClient(ctx context.Context, bridge string, remote net.IP) (instanceID, portID string, err error)
}

// Fetch gets a server's metadata from the control plane.
type Fetch func(ctx context.Context, instanceID string) (protocol.InstanceMetadata, error)

// Server serves every bridge's metadata port.
type Server struct {
	ports Ports
	fetch Fetch
	log   *slog.Logger
	ttl   time.Duration
	check time.Duration // how often a port's health is checked

	mu    sync.Mutex
	cache map[string]cached
}

type cached struct {
	tree    metadata.Tree
	expires time.Time
}

// New returns a metadata server; ttl is how long a server's tree is kept
// (a change to its metadata shows after at most that).
func New(ports Ports, fetch Fetch, ttl time.Duration, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{ports: ports, fetch: fetch, log: log, ttl: ttl, check: 10 * time.Second, cache: map[string]cached{}}
}

// Run serves until ctx ends: each bridge's port is made, served, checked
// every few seconds and made again when it went (drift repair).
func (s *Server) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, br := range s.ports.Bridges() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runBridge(ctx, br)
		}()
	}
	wg.Wait()
}

func (s *Server) runBridge(ctx context.Context, bridge string) {
	for ctx.Err() == nil {
		if err := s.serveBridge(ctx, bridge); err != nil && ctx.Err() == nil {
			s.log.Error("metadata service port failed; making it again", "bridge", bridge, "error", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
	}
}

// serveBridge makes bridge's port, serves it and returns when ctx ends or
// the port is no longer healthy.
func (s *Server) serveBridge(ctx context.Context, bridge string) error {
	ln, err := s.ports.ListenMetadata(ctx, bridge)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           s.Handler(bridge),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
		MaxHeaderBytes: 16 << 10,
		BaseContext:    func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() {
		_ = srv.Close()
		<-done
	}()
	t := time.NewTicker(s.check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-done:
			done <- err // for the deferred wait
			return err
		case <-t.C:
			ok, err := s.ports.MetadataPortHealthy(ctx, bridge)
			if err != nil {
				s.log.Warn("check metadata port", "bridge", bridge, "error", err)
				continue
			}
			if !ok {
				return errors.New("the metadata port is gone or broken in OVS")
			}
		}
	}
}

// Handler answers the servers behind bridge's metadata port.
func (s *Server) Handler(bridge string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		remote := net.ParseIP(host)
		if err != nil || remote == nil {
			http.Error(w, "400 Bad Request", http.StatusBadRequest)
			return
		}
		id, _, err := s.ports.MetadataClient(r.Context(), bridge, remote)
		if err != nil {
			s.log.Warn("metadata request from no known server port", "bridge", bridge, "remote", remote, "error", err)
			http.Error(w, "404 Not Found", http.StatusNotFound)
			return
		}
		tree, err := s.tree(r.Context(), id)
		if err != nil {
			s.log.Warn("metadata of a server", "instance", id, "error", err)
			if errdefs.IsNotFound(err) {
				http.Error(w, "404 Not Found", http.StatusNotFound)
				return
			}
			http.Error(w, "503 Service Unavailable", http.StatusServiceUnavailable)
			return
		}
		metadata.Serve(w, r, tree)
	})
}

// tree is instance id's rendered tree, from the cache while fresh.
func (s *Server) tree(ctx context.Context, id string) (metadata.Tree, error) {
	now := time.Now()
	s.mu.Lock()
	c, ok := s.cache[id]
	for k, v := range s.cache { // drop the stale (servers gone, moved away)
		if now.After(v.expires) {
			delete(s.cache, k)
		}
	}
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.tree, nil
	}
	md, err := s.fetch(ctx, id)
	if err != nil {
		return nil, err
	}
	t, err := metadata.Render(md)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.cache[id] = cached{tree: t, expires: now.Add(s.ttl)}
	s.mu.Unlock()
	return t, nil
}
