package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Endpoints are the base URLs of the public APIs the portal calls, in the
// catalog's shapes: Identity ends in /v3, Compute in /v2.1; Image and
// Network are unversioned (the portal adds /v2 and /v2.0).
type Endpoints struct {
	Identity, Compute, Image, Network string
}

type tokenBody struct {
	Token struct {
		ExpiresAt string `json:"expires_at"`
		User      struct {
			Name string `json:"name"`
		} `json:"user"`
		Project struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"project"`
		Roles []struct {
			Name string `json:"name"`
		} `json:"roles"`
	} `json:"token"`
}

// login asks Keystone for a project-scoped token with password auth.
func (s *Server) login(ctx context.Context, user, password, project string) (*session, error) {
	domain := map[string]string{"name": "Default"}
	body := map[string]any{"auth": map[string]any{
		"identity": map[string]any{"methods": []string{"password"},
			"password": map[string]any{"user": map[string]any{"name": user, "domain": domain, "password": password}}},
		"scope": map[string]any{"project": map[string]any{"name": project, "domain": domain}},
	}}
	var tb tokenBody
	hdr, err := s.up.do(ctx, "identity", "", http.MethodPost, s.ep.Identity+"/auth/tokens?nocatalog", body, &tb)
	if err != nil {
		return nil, err
	}
	sess := &session{Token: hdr.Get("X-Subject-Token"), User: tb.Token.User.Name, Project: tb.Token.Project.Name,
		ProjectID: tb.Token.Project.ID}
	if sess.Token == "" {
		return nil, fmt.Errorf("identity answered without X-Subject-Token")
	}
	sess.Expires, err = time.Parse(time.RFC3339, tb.Token.ExpiresAt)
	if err != nil {
		sess.Expires = time.Now().Add(time.Hour)
	}
	for _, r := range tb.Token.Roles {
		if r.Name == "admin" {
			sess.Admin = true
		}
	}
	return sess, nil
}

// revoke ends the token at Keystone (DELETE /v3/auth/tokens).
func (s *Server) revoke(ctx context.Context, token string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, s.ep.Identity+"/auth/tokens", nil)
	if err != nil {
		return err
	}
	req.Header.Set("X-Auth-Token", token)
	req.Header.Set("X-Subject-Token", token)
	resp, err := s.up.client.Do(req)
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 && resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("revoke token: HTTP %d", resp.StatusCode)
	}
	return nil
}

// Limits are the project's absolute compute limits and usage.
type Limits struct {
	MaxInstances  int `json:"maxTotalInstances"`
	UsedInstances int `json:"totalInstancesUsed"`
	MaxCores      int `json:"maxTotalCores"`
	UsedCores     int `json:"totalCoresUsed"`
	MaxRAM        int `json:"maxTotalRAMSize"`
	UsedRAM       int `json:"totalRAMUsed"`
}

func (s *Server) limits(ctx context.Context, sess *session) (*Limits, error) {
	var body struct {
		Limits struct {
			Absolute Limits `json:"absolute"`
		} `json:"limits"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/limits", nil, &body)
	return &body.Limits.Absolute, err
}

// ServerView is a server as the compute API shows it.
type ServerView struct {
	ID        string                             `json:"id"`
	Name      string                             `json:"name"`
	Status    string                             `json:"status"`
	TaskState *string                            `json:"OS-EXT-STS:task_state"`
	Power     int                                `json:"OS-EXT-STS:power_state"`
	Host      *string                            `json:"OS-EXT-SRV-ATTR:host"`
	Created   string                             `json:"created"`
	Flavor    struct{ ID string }                `json:"flavor"`
	Image     any                                `json:"image"`
	Addresses map[string][]struct{ Addr string } `json:"addresses"`
	Fault     *struct{ Message string }          `json:"fault"`
}

// IPs lists the server's addresses as "net: ip" strings.
func (sv *ServerView) IPs() []string {
	var out []string
	for net, addrs := range sv.Addresses {
		for _, a := range addrs {
			out = append(out, net+": "+a.Addr)
		}
	}
	sort.Strings(out)
	return out
}

// Task is the task state, "" when none.
func (sv *ServerView) Task() string {
	if sv.TaskState == nil {
		return ""
	}
	return *sv.TaskState
}

// ImageID is the server's image id ("" for none).
func (sv *ServerView) ImageID() string {
	if m, ok := sv.Image.(map[string]any); ok {
		id, _ := m["id"].(string)
		return id
	}
	return ""
}

// listServers returns one page of the project's servers (newest first,
// as Nova orders them) and the marker of the next page ("" at the end).
func (s *Server) listServers(ctx context.Context, sess *session, marker string, limit int) ([]ServerView, string, error) {
	q := url.Values{"limit": {fmt.Sprint(limit + 1)}}
	if marker != "" {
		q.Set("marker", marker)
	}
	var body struct {
		Servers []ServerView `json:"servers"`
	}
	if _, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/detail?"+q.Encode(), nil, &body); err != nil {
		return nil, "", err
	}
	// One more than a page tells whether there is a next page without an
	// empty last page.
	next := ""
	if len(body.Servers) > limit {
		body.Servers = body.Servers[:limit]
		next = body.Servers[limit-1].ID
	}
	return body.Servers, next, nil
}

func (s *Server) getServer(ctx context.Context, sess *session, id string) (*ServerView, error) {
	var body struct {
		Server ServerView `json:"server"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id), nil, &body)
	return &body.Server, err
}

// LaunchRequest is the launch form.
type LaunchRequest struct {
	Name, Image, Flavor, Network, FixedIP string
	Count                                 int
}

func (s *Server) createServer(ctx context.Context, sess *session, lr LaunchRequest) error {
	srv := map[string]any{"name": lr.Name, "imageRef": lr.Image, "flavorRef": lr.Flavor}
	if lr.Network != "" {
		n := map[string]string{"uuid": lr.Network}
		if lr.FixedIP != "" {
			n["fixed_ip"] = lr.FixedIP
		}
		srv["networks"] = []any{n}
	}
	if lr.Count > 1 {
		srv["min_count"], srv["max_count"] = lr.Count, lr.Count
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodPost, s.ep.Compute+"/servers", map[string]any{"server": srv}, nil)
	return err
}

// serverAction runs start, stop, reboot or delete on a server.
func (s *Server) serverAction(ctx context.Context, sess *session, id, action string) error {
	u := s.ep.Compute + "/servers/" + url.PathEscape(id)
	var body any
	switch action {
	case "delete":
		_, err := s.up.do(ctx, "compute", sess.Token, http.MethodDelete, u, nil, nil)
		return err
	case "start":
		body = map[string]any{"os-start": nil}
	case "stop":
		body = map[string]any{"os-stop": nil}
	case "reboot":
		body = map[string]any{"reboot": map[string]string{"type": "SOFT"}}
	default:
		return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "unknown action " + action}
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodPost, u+"/action", body, nil)
	return err
}

func (s *Server) consoleOutput(ctx context.Context, sess *session, id string, lines int) (string, error) {
	var body struct {
		Output string `json:"output"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodPost, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/action",
		map[string]any{"os-getConsoleOutput": map[string]int{"length": lines}}, &body)
	return body.Output, err
}

// InstanceAction is one entry of a server's action log.
type InstanceAction struct {
	Action    string  `json:"action"`
	RequestID string  `json:"request_id"`
	StartTime string  `json:"start_time"`
	Message   *string `json:"message"`
	UserID    string  `json:"user_id"`
}

func (s *Server) instanceActions(ctx context.Context, sess *session, id string) ([]InstanceAction, error) {
	var body struct {
		Actions []InstanceAction `json:"instanceActions"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/os-instance-actions", nil, &body)
	return body.Actions, err
}

// Flavor is a compute flavor.
type Flavor struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	VCPUs int    `json:"vcpus"`
	RAM   int    `json:"ram"`
	Disk  int    `json:"disk"`
}

func (s *Server) flavors(ctx context.Context, sess *session) ([]Flavor, error) {
	var body struct {
		Flavors []Flavor `json:"flavors"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/flavors/detail", nil, &body)
	sort.Slice(body.Flavors, func(i, j int) bool {
		a, b := body.Flavors[i], body.Flavors[j]
		if a.RAM != b.RAM {
			return a.RAM < b.RAM
		}
		return a.Name < b.Name
	})
	return body.Flavors, err
}

// Image is a Glance image.
type Image struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Visibility string `json:"visibility"`
	Size       int64  `json:"size"`
}

func (s *Server) images(ctx context.Context, sess *session) ([]Image, error) {
	var body struct {
		Images []Image `json:"images"`
	}
	_, err := s.up.do(ctx, "image", sess.Token, http.MethodGet, s.ep.Image+"/v2/images?limit=1000", nil, &body)
	sort.Slice(body.Images, func(i, j int) bool { return body.Images[i].Name < body.Images[j].Name })
	return body.Images, err
}

// Network is a Neutron network with its subnets' CIDRs.
type Network struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Status  string   `json:"status"`
	Shared  bool     `json:"shared"`
	Subnets []string `json:"subnets"`
	Type    string   `json:"provider:network_type"`
	CIDRs   []string `json:"-"`
}

func (s *Server) networks(ctx context.Context, sess *session) ([]Network, error) {
	var nb struct {
		Networks []Network `json:"networks"`
	}
	if _, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/networks", nil, &nb); err != nil {
		return nil, err
	}
	var sb struct {
		Subnets []struct {
			ID, CIDR string
		} `json:"subnets"`
	}
	if _, err := s.up.do(ctx, "network", sess.Token, http.MethodGet, s.ep.Network+"/v2.0/subnets", nil, &sb); err != nil {
		return nil, err
	}
	cidr := map[string]string{}
	for _, sn := range sb.Subnets {
		cidr[sn.ID] = sn.CIDR
	}
	for i := range nb.Networks {
		for _, id := range nb.Networks[i].Subnets {
			if c := cidr[id]; c != "" {
				nb.Networks[i].CIDRs = append(nb.Networks[i].CIDRs, c)
			}
		}
	}
	sort.Slice(nb.Networks, func(i, j int) bool { return nb.Networks[i].Name < nb.Networks[j].Name })
	return nb.Networks, nil
}

// names maps ids to names for display ("" ids show as "-").
func names[T any](items []T, id, name func(T) string) map[string]string {
	m := map[string]string{}
	for _, it := range items {
		m[id(it)] = name(it)
	}
	return m
}

func joinOr(items []string, empty string) string {
	if len(items) == 0 {
		return empty
	}
	return strings.Join(items, ", ")
}
