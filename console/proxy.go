// Package console is Capsule's serial console proxy (the role of
// nova-serialproxy): it issues single-use, expiring console URLs, accepts
// a user's websocket on one and joins it to an interactive shell that the
// server's agent opens in the server and streams back to the proxy
// (package console/stream: the stream does not cross the bus).
package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/console/stream"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// PathPrefix is where the proxy's endpoints live on the listener that
// serves it: PathPrefix+"/serial" for users' websockets,
// PathPrefix+"/novnc/vnc_auto.html" for the HTML5 console page (page.go),
// PathPrefix+"/static/" for its script and style,
// PathPrefix+"/agent/<session>" for agents' dial-backs.
const PathPrefix = "/console"

// Console types Issue hands out URLs for.
const (
	// TypeSerial is a ws(s):// URL of a websocket carrying the console's
	// bytes (nova-serialproxy's).
	TypeSerial = "serial"
	// TypeNoVNC is an http(s):// URL of a page that runs a terminal on
	// the serial console in the browser: containers have no framebuffer,
	// so this is Capsule's answer to a VNC console.
	TypeNoVNC = "novnc"
)

// IsConsole says r is for the proxy (its connections outlive the API's
// read and write timeouts).
func IsConsole(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, PathPrefix+"/") }

// Options configure a Proxy.
type Options struct {
	Store *store.Store
	Bus   bus.Bus
	// PublicURL is the base of the URLs users get (ws:// or wss://,
	// ending in PathPrefix; the console page's URL is the same with
	// http:// or https://), InternalURL the base agents dial back to
	// (http:// or https://, ending in PathPrefix); both reach this
	// process.
	PublicURL   string
	InternalURL string
	// TokenTTL is how long a URL may wait for its one use (default 10m).
	TokenTTL time.Duration
	// AttachTimeout bounds the agent's answer and dial-back (default 30s).
	AttachTimeout time.Duration
	Log           *slog.Logger
	Now           func() time.Time
}

// Proxy issues console URLs and serves them.
type Proxy struct {
	opts     Options
	upgrader websocket.Upgrader

	mu      sync.Mutex
	pending map[string]*session // by session id, until the agent dials back
}

// session is one websocket waiting for its agent's stream.
type session struct {
	secretHash [sha256.Size]byte
	conn       chan net.Conn // buffered 1
}

// New returns a Proxy.
func New(opts Options) *Proxy {
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = 10 * time.Minute
	}
	if opts.AttachTimeout <= 0 {
		opts.AttachTimeout = 30 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Proxy{opts: opts, pending: map[string]*session{},
		upgrader: websocket.Upgrader{
			// nova-serialproxy's subprotocol: the console's bytes as
			// binary messages.
			Subprotocols: []string{"binary"},
			// The URL's token is the credential, single-use and not a
			// cookie: a page of another origin holding it may as well
			// use it (the portal embeds consoles).
			CheckOrigin:     func(*http.Request) bool { return true },
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
		}}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

func hashOf(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// Issue stores a new single-use token for a console of type typ
// (TypeSerial or TypeNoVNC) of the instance and returns its URL. The
// caller checked the policy and the server's state.
func (p *Proxy) Issue(ctx context.Context, instanceID, projectID, typ string) (string, error) {
	switch typ {
	case TypeSerial:
		token, err := p.newToken(ctx, instanceID, projectID, TypeSerial, p.opts.TokenTTL)
		if err != nil {
			return "", err
		}
		return p.opts.PublicURL + "/serial?token=" + token, nil
	case TypeNoVNC:
		token, err := p.newToken(ctx, instanceID, projectID, TypeNoVNC, p.opts.TokenTTL)
		if err != nil {
			return "", err
		}
		// noVNC's form: the websocket's path, with the token, in the
		// page's query.
		return p.pageBase() + pagePath + "?path=" + url.QueryEscape("?token="+token), nil
	}
	return "", errdefs.InvalidArgumentf("Unavailable console type %s.", typ)
}

// newToken stores a single-use token of protocol proto valid for ttl.
func (p *Proxy) newToken(ctx context.Context, instanceID, projectID, proto string, ttl time.Duration) (string, error) {
	token := randomHex(32)
	now := p.opts.Now().UTC()
	t := &store.ConsoleToken{TokenHash: hashOf(token), InstanceID: instanceID, ProjectID: projectID, Protocol: proto,
		ExpiresAt: now.Add(ttl), CreatedAt: now}
	if err := p.opts.Store.CreateConsoleToken(ctx, t, now); err != nil {
		return "", err
	}
	return token, nil
}

// pageBase is PublicURL with the web scheme of its websocket scheme.
func (p *Proxy) pageBase() string {
	if rest, ok := strings.CutPrefix(p.opts.PublicURL, "wss://"); ok {
		return "https://" + rest
	}
	if rest, ok := strings.CutPrefix(p.opts.PublicURL, "ws://"); ok {
		return "http://" + rest
	}
	return p.opts.PublicURL
}

// consume takes token's one use for protocol proto: the token, or a
// reason to refuse it (invalid, used, expired or of another type: the
// use spends it either way).
func (p *Proxy) consume(ctx context.Context, token, proto string) (*store.ConsoleToken, bool) {
	if token == "" {
		return nil, false
	}
	tok, err := p.opts.Store.ConsumeConsoleToken(ctx, hashOf(token), p.opts.Now().UTC())
	if err != nil {
		if !errdefs.IsNotFound(err) {
			p.opts.Log.Error("console token", "err", err)
		}
		return nil, false
	}
	return tok, tok.Protocol == proto
}

// liveInstance is the token's instance if it can have a console now, or
// the status and message that say why not.
func (p *Proxy) liveInstance(ctx context.Context, tok *store.ConsoleToken) (*store.Instance, int, string) {
	var inst store.Instance
	if err := p.opts.Store.WithContext(ctx).Where("id = ? AND deleted_at IS NULL", tok.InstanceID).First(&inst).Error; err != nil {
		return nil, http.StatusNotFound, "The server is gone."
	}
	if inst.VMState != lifecycle.Active || inst.Host == "" {
		return nil, http.StatusConflict, fmt.Sprintf("Instance %s is not ready (vm_state %s).", inst.ID, inst.VMState)
	}
	return &inst, 0, ""
}

// ServeHTTP serves the user and agent endpoints.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == PathPrefix+"/serial" || r.URL.Path == PathPrefix+"/serial/":
		p.serveUser(w, r)
	case r.URL.Path == PathPrefix+pagePath:
		p.servePage(w, r)
	case strings.HasPrefix(r.URL.Path, PathPrefix+"/static/"):
		p.serveStatic(w, r, strings.TrimPrefix(r.URL.Path, PathPrefix+"/static/"))
	case strings.HasPrefix(r.URL.Path, PathPrefix+"/agent/"):
		p.serveAgent(w, r, strings.TrimPrefix(r.URL.Path, PathPrefix+"/agent/"))
	default:
		http.Error(w, "not found", http.StatusNotFound)
	}
}

// serveUser takes the URL's token (its one use), checks the server can
// still have a console, accepts the websocket and joins it to a shell the
// server's agent opens.
func (p *Proxy) serveUser(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("token")
	if token == "" || !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "a console URL is opened with a websocket", http.StatusBadRequest)
		return
	}
	tok, ok := p.consume(r.Context(), token, TypeSerial)
	if !ok {
		http.Error(w, "The token is invalid, used or expired.", http.StatusUnauthorized)
		return
	}
	inst, status, msg := p.liveInstance(r.Context(), tok)
	if inst == nil {
		http.Error(w, msg, status)
		return
	}
	ws, err := p.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	defer ws.Close()
	// The API listener's timeouts do not apply to a console.
	_ = ws.NetConn().SetDeadline(time.Time{})
	log := p.opts.Log.With("instance", inst.ID, "host", inst.Host)
	conn, err := p.attach(r.Context(), inst)
	if err != nil {
		log.Warn("serial console not connected", "err", err)
		msg := "console unavailable"
		var remote *bus.RemoteError
		if errors.As(err, &remote) {
			msg += ": " + remote.Message
		}
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseInternalServerErr, truncate(msg, 120)),
			time.Now().Add(time.Second))
		return
	}
	defer conn.Close()
	log.Info("serial console connected")
	pump(ws, conn)
	log.Info("serial console closed")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// attach asks the instance's agent for a shell and waits for its stream.
func (p *Proxy) attach(ctx context.Context, inst *store.Instance) (net.Conn, error) {
	sid, secret := randomHex(16), randomHex(32)
	s := &session{secretHash: sha256.Sum256([]byte(secret)), conn: make(chan net.Conn, 1)}
	p.mu.Lock()
	p.pending[sid] = s
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.pending, sid)
		p.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, p.opts.AttachTimeout)
	defer cancel()
	msg, err := bus.NewMessage(protocol.KindConsoleAttach, protocol.ConsoleAttach{InstanceID: inst.ID,
		URL: p.opts.InternalURL + "/agent/" + sid, Secret: secret})
	if err != nil {
		return nil, err
	}
	var rep protocol.ConsoleAttachReply
	if err := p.opts.Bus.Call(ctx, bus.ComputeQueue(inst.Host), msg, &rep); err != nil {
		return nil, fmt.Errorf("console attach on host %s: %w", inst.Host, err)
	}
	// The agent replies once its dial-back was accepted: the stream is
	// here or about to be.
	select {
	case c := <-s.conn:
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("console attach on host %s: the agent did not connect: %w", inst.Host, ctx.Err())
	}
}

// serveAgent accepts an agent's dial-back for session sid: the secret
// must match, once.
func (p *Proxy) serveAgent(w http.ResponseWriter, r *http.Request, sid string) {
	secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !strings.EqualFold(r.Header.Get("Upgrade"), stream.Upgrade) {
		http.Error(w, "bad console dial-back", http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256([]byte(secret))
	p.mu.Lock()
	s := p.pending[sid]
	if s != nil && subtle.ConstantTimeCompare(sum[:], s.secretHash[:]) == 1 {
		delete(p.pending, sid)
	} else {
		s = nil
	}
	p.mu.Unlock()
	if s == nil {
		http.Error(w, "unknown console session", http.StatusForbidden)
		return
	}
	conn, err := stream.Accept(w)
	if err != nil {
		p.opts.Log.Warn("console dial-back", "err", err)
		http.Error(w, "cannot take the connection", http.StatusInternalServerError)
		return
	}
	s.conn <- conn
}

// pump copies the console both ways until either side ends.
func pump(ws *websocket.Conn, conn net.Conn) {
	done := make(chan struct{}, 2)
	go func() {
		defer func() { done <- struct{}{} }()
		buf := make([]byte, 32<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				if werr := ws.WriteMessage(websocket.BinaryMessage, buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "console ended"),
					time.Now().Add(time.Second))
				return
			}
		}
	}()
	go func() {
		defer func() { done <- struct{}{} }()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				return
			}
			if _, err := conn.Write(data); err != nil {
				return
			}
		}
	}()
	<-done
	// Either side ended: closing both ends the other copy.
	_ = conn.Close()
	_ = ws.Close()
	<-done
}
