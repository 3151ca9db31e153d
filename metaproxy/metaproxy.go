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
	"io"
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

// PostPassword stores the password a server posted with the control plane
// (once: errdefs Conflict when it has one).
type PostPassword func(ctx context.Context, instanceID, password string) error

// Server serves every bridge's metadata port.
type Server struct {
	ports Ports
	fetch Fetch
	post  PostPassword
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
// (a change to its metadata shows after at most that; a server's own
// password post shows at once).
func New(ports Ports, fetch Fetch, post PostPassword, ttl time.Duration, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{ports: ports, fetch: fetch, post: post, log: log, ttl: ttl, check: 10 * time.Second, cache: map[string]cached{}}
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
		if metadata.IsPasswordPath(r.URL.Path) && r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.postPassword(w, r, id)
			return
		}
		tree, err := s.tree(r.Context(), id)
		if err != nil {
			s.log.Warn("metadata of a server", "instance", id, "error", err)
			s.controlPlaneError(w, err)
			return
		}
		metadata.Serve(w, r, tree)
	})
}

// controlPlaneError answers a request the control plane failed: 404 for a
// server it does not place here, 409 for a password already set, 503 for
// the rest (it did not answer).
func (s *Server) controlPlaneError(w http.ResponseWriter, err error) {
	switch {
	case errdefs.IsNotFound(err):
		http.Error(w, "404 Not Found", http.StatusNotFound)
	case errdefs.IsConflict(err):
		http.Error(w, "409 Conflict", http.StatusConflict)
	default:
		http.Error(w, "503 Service Unavailable", http.StatusServiceUnavailable)
	}
}

// postPassword is Nova's password endpoint for a method other than GET:
// POST stores the body (at most 256 bytes, else 400 "Request is too
// large.") as the server's password, once (409 once one is set); any
// other method is a 400, as Nova answers.
func (s *Server) postPassword(w http.ResponseWriter, r *http.Request, id string) {
	if r.Method != http.MethodPost || s.post == nil {
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	if r.ContentLength > protocol.MaxMetadataPassword {
		http.Error(w, "400 Bad Request\n\nRequest is too large.", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, protocol.MaxMetadataPassword+1))
	if err != nil {
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	if len(body) > protocol.MaxMetadataPassword {
		http.Error(w, "400 Bad Request\n\nRequest is too large.", http.StatusBadRequest)
		return
	}
	if err := s.post(r.Context(), id, string(body)); err != nil {
		if !errdefs.IsConflict(err) {
			s.log.Warn("store a server's posted password", "instance", id, "error", err)
		}
		s.controlPlaneError(w, err)
		return
	}
	// The server reads its password back at once, not after the TTL.
	s.mu.Lock()
	delete(s.cache, id)
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
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
