package portal

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoints are the base URLs of the public APIs the portal calls, in the
// catalog's shapes: Identity ends in /v3, Compute in /v2.1; Image, Network
// and Volume are unversioned (the portal adds /v2, /v2.0 and
// /v3/{project_id}). Volume is optional: without it (the cloud serves no
// Block Storage API) the Volumes page says so.
type Endpoints struct {
	Identity, Compute, Image, Network, Volume string
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
	return s.newSession(ctx, body)
}

// newSession asks Keystone for the token body describes and makes the
// session of it: who, which project, whether admin or only a reader, and
// the other projects the user may switch to.
func (s *Server) newSession(ctx context.Context, body any) (*session, error) {
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
	// A cloud admin is the admin role on the admin project; elsewhere
	// the role administers one project and the admin pages would only
	// show the APIs' refusals.
	sess.Reader = true
	for _, r := range tb.Token.Roles {
		if r.Name == "admin" && (s.admin == "*" || sess.Project == s.admin) {
			sess.Admin = true
		}
		if r.Name == "admin" || r.Name == "member" {
			sess.Reader = false
		}
	}
	var pb struct {
		Projects []Project `json:"projects"`
	}
	// The projects the user has roles on (the switcher's choices); a
	// failure only leaves the switcher out.
	if _, err := s.up.do(ctx, "identity", sess.Token, http.MethodGet, s.ep.Identity+"/auth/projects", nil, &pb); err == nil {
		sort.Slice(pb.Projects, func(i, j int) bool { return pb.Projects[i].Name < pb.Projects[j].Name })
		for _, p := range pb.Projects {
			if p.Enabled {
				sess.Projects = append(sess.Projects, p)
			}
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

// left is what remains of max after used ("unlimited" for -1).
func left(used, max int) string {
	if max < 0 {
		return "unlimited"
	}
	return strconv.Itoa(max-min(used, max)) + " of " + strconv.Itoa(max)
}

// Full reports whether no server can be launched within the quota.
func (l *Limits) Full() bool {
	return l.MaxInstances >= 0 && l.UsedInstances >= l.MaxInstances ||
		l.MaxCores >= 0 && l.UsedCores >= l.MaxCores || l.MaxRAM >= 0 && l.UsedRAM >= l.MaxRAM
}

// Left says what the quota leaves, for the launch form.
func (l *Limits) Left() string {
	return left(l.UsedInstances, l.MaxInstances) + " servers, " + left(l.UsedCores, l.MaxCores) + " vCPUs, " +
		left(l.UsedRAM, l.MaxRAM) + " MB RAM"
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
	KeyName   *string                            `json:"key_name"`
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
	Name, Image, Flavor, Network, FixedIP, KeyName string
	// Count is min_count; MaxCount max_count (0: Count): Nova launches as
	// many as the quota allows up to MaxCount, at least Count.
	Count, MaxCount int
	// UserData is the user data as typed (the portal base64-encodes it).
	UserData string
	// Zone is the availability zone ("" = the scheduler's choice).
	Zone string
	// Tags are the servers' tags (sent at 2.52).
	Tags []string
	// Groups are the security groups' names ("" = the project's default).
	Groups []string
}

// HasGroup says the launch form asked for the group name.
func (lr LaunchRequest) HasGroup(name string) bool {
	for _, g := range lr.Groups {
		if g == name {
			return true
		}
	}
	return false
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
	if hi := max(lr.MaxCount, lr.Count); hi > 1 {
		srv["min_count"], srv["max_count"] = max(lr.Count, 1), hi
	}
	if lr.UserData != "" {
		srv["user_data"] = base64.StdEncoding.EncodeToString([]byte(lr.UserData))
	}
	if lr.Zone != "" {
		srv["availability_zone"] = lr.Zone
	}
	version := ""
	if len(lr.Tags) > 0 {
		// Tags at create came with 2.52, where (from 2.37) networks is
		// required: "auto" is what no choice means below it.
		version, srv["tags"] = "2.52", lr.Tags
		if lr.Network == "" {
			srv["networks"] = "auto"
		}
	}
	if lr.KeyName != "" {
		srv["key_name"] = lr.KeyName
	}
	if len(lr.Groups) > 0 {
		sgs := make([]map[string]string, 0, len(lr.Groups))
		for _, g := range lr.Groups {
			sgs = append(sgs, map[string]string{"name": g})
		}
		srv["security_groups"] = sgs
	}
	_, err := s.up.doAt(ctx, "compute", version, sess.Token, http.MethodPost, s.ep.Compute+"/servers", map[string]any{"server": srv}, nil)
	return err
}

// maxUserData is the most user data the launch form takes: Nova's
// user_data is at most 65,535 base64 characters, 49,149 bytes before
// encoding.
const maxUserData = 65535 / 4 * 3

// parseTags splits the launch form's tags (commas or new lines), checked
// as Nova checks them (1 to 60 characters, no '/', at most 50).
func parseTags(text string) ([]string, string) {
	var tags []string
	seen := map[string]bool{}
	for _, t := range strings.FieldsFunc(text, func(r rune) bool { return r == ',' || r == '\n' || r == '\r' }) {
		t = strings.TrimSpace(t)
		if t == "" || seen[t] {
			continue
		}
		if len(t) > 60 || strings.Contains(t, "/") {
			return nil, "A tag is 1 to 60 characters without '/' or ',': " + strconv.Quote(t) + " is not."
		}
		seen[t] = true
		tags = append(tags, t)
	}
	if len(tags) > 50 {
		return nil, "A server has at most 50 tags."
	}
	return tags, ""
}

// Zone is an availability zone from os-availability-zone.
type Zone struct {
	Name      string `json:"zoneName"`
	Available bool
}

func (s *Server) zones(ctx context.Context, sess *session) ([]Zone, error) {
	var body struct {
		Zones []struct {
			Name  string `json:"zoneName"`
			State struct {
				Available bool `json:"available"`
			} `json:"zoneState"`
		} `json:"availabilityZoneInfo"`
	}
	if _, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/os-availability-zone", nil, &body); err != nil {
		return nil, err
	}
	out := make([]Zone, 0, len(body.Zones))
	for _, z := range body.Zones {
		out = append(out, Zone{Name: z.Name, Available: z.State.Available})
	}
	return out, nil
}

// ActionArgs are the form fields some actions take.
type ActionArgs struct {
	Flavor string // resize: the new flavor's id
	Name   string // snapshot: the new image's name; rename: the server's
	Host   string // migrate: the target host ("" = the scheduler's choice)
	Image  string // rebuild: the new image's id
	Group  string // addSecurityGroup, removeSecurityGroup: the group's name
}

// actionBodies are the Nova action bodies of the portal's simple actions.
var actionBodies = map[string]any{
	"start":         map[string]any{"os-start": nil},
	"stop":          map[string]any{"os-stop": nil},
	"reboot":        map[string]any{"reboot": map[string]string{"type": "SOFT"}},
	"pause":         map[string]any{"pause": nil},
	"unpause":       map[string]any{"unpause": nil},
	"suspend":       map[string]any{"suspend": nil},
	"resume":        map[string]any{"resume": nil},
	"confirmResize": map[string]any{"confirmResize": nil},
	"revertResize":  map[string]any{"revertResize": nil},
	"lock":          map[string]any{"lock": nil},
	"unlock":        map[string]any{"unlock": nil},
	"shelve":        map[string]any{"shelve": nil},
	"unshelve":      map[string]any{"unshelve": nil},
	"rescue":        map[string]any{"rescue": nil},
	"unrescue":      map[string]any{"unrescue": nil},
}

// serverAction runs one of the portal's actions on a server: the simple
// ones above, delete, resize, snapshot (createImage) and migrate.
func (s *Server) serverAction(ctx context.Context, sess *session, id, action string, args ActionArgs) error {
	u := s.ep.Compute + "/servers/" + url.PathEscape(id)
	version := ""
	body, ok := actionBodies[action]
	switch {
	case ok:
	case action == "delete":
		_, err := s.up.do(ctx, "compute", sess.Token, http.MethodDelete, u, nil, nil)
		return err
	case action == "resize":
		if args.Flavor == "" {
			return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "Choose the flavor to resize to."}
		}
		body = map[string]any{"resize": map[string]string{"flavorRef": args.Flavor}}
	case action == "snapshot":
		if strings.TrimSpace(args.Name) == "" {
			return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "Give the snapshot a name."}
		}
		body = map[string]any{"createImage": map[string]string{"name": strings.TrimSpace(args.Name)}}
	case action == "rename":
		name := strings.TrimSpace(args.Name)
		if name == "" {
			return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "Give the server a name."}
		}
		_, err := s.up.do(ctx, "compute", sess.Token, http.MethodPut, u, map[string]any{"server": map[string]string{"name": name}}, nil)
		return err
	case action == "addSecurityGroup" || action == "removeSecurityGroup":
		if args.Group == "" {
			return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "Choose a security group."}
		}
		body = map[string]any{action: map[string]string{"name": args.Group}}
	case action == "rebuild":
		if args.Image == "" {
			return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "Choose the image to rebuild the server with."}
		}
		body = map[string]any{"rebuild": map[string]string{"imageRef": args.Image}}
	case action == "evacuate":
		// 2.14: no onSharedStorage; the scheduler picks the host.
		version = "2.14"
		body = map[string]any{"evacuate": map[string]any{}}
	case action == "migrate":
		body = map[string]any{"migrate": nil}
		if args.Host != "" {
			// A target host is 2.56's; below it migrate takes no body.
			version = "2.56"
			body = map[string]any{"migrate": map[string]string{"host": args.Host}}
		}
	default:
		return &APIError{Status: http.StatusBadRequest, Service: "portal", Message: "There is no action " + strconv.Quote(action) + "."}
	}
	_, err := s.up.doAt(ctx, "compute", version, sess.Token, http.MethodPost, u+"/action", body, nil)
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

// InstanceAction is one entry of a server's action log: what users asked
// for, and what the cloud noticed by itself (alarms such as "oom_kill" or
// "pids_alarm" are recorded as actions too).
type InstanceAction struct {
	Action    string        `json:"action"`
	RequestID string        `json:"request_id"`
	StartTime string        `json:"start_time"`
	Message   *string       `json:"message"`
	UserID    string        `json:"user_id"`
	Events    []ActionEvent `json:"events"`
}

// ActionEvent is one step of an action, with its result.
type ActionEvent struct {
	Event      string  `json:"event"`
	StartTime  string  `json:"start_time"`
	FinishTime *string `json:"finish_time"`
	Result     *string `json:"result"`
	// Details (Nova 2.84, for everyone) and Traceback (admins) say why
	// a failed step failed.
	Details   *string `json:"details"`
	Traceback *string `json:"traceback"`
}

// Why is what the action's first failed step says of its failure: its
// details, else its traceback (which the API shows admins only); "" when
// nothing failed or the API tells this user nothing more.
func (a *InstanceAction) Why() string {
	for _, e := range a.Events {
		if e.Result == nil || !strings.EqualFold(*e.Result, "Error") {
			continue
		}
		for _, s := range []*string{e.Details, e.Traceback} {
			if s != nil && strings.TrimSpace(*s) != "" {
				return strings.TrimSpace(*s)
			}
		}
	}
	return ""
}

// Failed reports whether a step of the action ended in Error.
func (a *InstanceAction) Failed() bool {
	for _, e := range a.Events {
		if e.Result != nil && strings.EqualFold(*e.Result, "Error") {
			return true
		}
	}
	return false
}

// EventSummary lists the action's steps as "event: result".
func (a *InstanceAction) EventSummary() string {
	parts := make([]string, 0, len(a.Events))
	for _, e := range a.Events {
		r := "running"
		if e.Result != nil && *e.Result != "" {
			r = *e.Result
		}
		parts = append(parts, e.Event+": "+r)
	}
	return strings.Join(parts, ", ")
}

// actionDetails is how many of the newest actions get their events
// fetched (one call each): enough for the page, bounded for a server
// with a long history.
const actionDetails = 25

// instanceActions lists the server's actions, newest first, with the
// events of the newest ones. The list has no events; each action's own
// GET has them for members from 2.51 (for admins always), and from 2.84
// each failed event's details, which say why (e.g. "No valid host was
// found" for a migration nobody could take).
func (s *Server) instanceActions(ctx context.Context, sess *session, id string) ([]InstanceAction, error) {
	var body struct {
		Actions []InstanceAction `json:"instanceActions"`
	}
	base := s.ep.Compute + "/servers/" + url.PathEscape(id) + "/os-instance-actions"
	if _, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, base, nil, &body); err != nil {
		return nil, err
	}
	var wg sync.WaitGroup
	for i := range body.Actions[:min(len(body.Actions), actionDetails)] {
		a := &body.Actions[i]
		if a.RequestID == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var one struct {
				Action InstanceAction `json:"instanceAction"`
			}
			// Without its events an action is still listed: the log
			// matters more than the highlight.
			if _, err := s.up.doAt(ctx, "compute", "2.84", sess.Token, http.MethodGet, base+"/"+url.PathEscape(a.RequestID), nil, &one); err == nil {
				a.Events = one.Action.Events
			}
		}()
	}
	wg.Wait()
	return body.Actions, nil
}

// Sample is one diagnostics reading of a server, as the detail page's
// charts take it: counters, not rates (the page keeps the samples and
// works the rates out from consecutive ones).
type Sample struct {
	At       int64   `json:"t"` // when the portal read it, Unix ms
	State    string  `json:"state"`
	VCPUs    int     `json:"vcpus"`
	CPUNS    *uint64 `json:"cpu_ns"`      // CPU time used, all vCPUs; nil when not running
	MemUsed  *int64  `json:"mem_used_mb"` // nil when not running
	MemMax   int64   `json:"mem_max_mb"`
	RxBytes  *uint64 `json:"rx_bytes"` // summed over the server's NICs; nil without one
	TxBytes  *uint64 `json:"tx_bytes"`
	NumNICs  int     `json:"nics"`
	Uptime   *int64  `json:"uptime"`
	ServerID string  `json:"id"`
}

// diagnostics reads the server's diagnostics in 2.48's standard body
// (the same fields on every Nova driver). Nova lets admins only.
func (s *Server) diagnostics(ctx context.Context, sess *session, id string) (*Sample, error) {
	var body struct {
		State      string `json:"state"`
		NumCPUs    int    `json:"num_cpus"`
		Uptime     *int64 `json:"uptime"`
		CPUDetails []struct {
			Time *uint64 `json:"time"`
		} `json:"cpu_details"`
		Memory struct {
			Maximum int64  `json:"maximum"`
			Used    *int64 `json:"used"`
		} `json:"memory_details"`
		NICs []struct {
			Rx *uint64 `json:"rx_octets"`
			Tx *uint64 `json:"tx_octets"`
		} `json:"nic_details"`
	}
	_, err := s.up.doAt(ctx, "compute", "2.48", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id)+"/diagnostics", nil, &body)
	if err != nil {
		return nil, err
	}
	smp := &Sample{At: time.Now().UnixMilli(), ServerID: id, State: body.State, VCPUs: body.NumCPUs, MemUsed: body.Memory.Used,
		MemMax: body.Memory.Maximum, NumNICs: len(body.NICs), Uptime: body.Uptime}
	for _, c := range body.CPUDetails {
		if c.Time != nil {
			t := *c.Time
			if smp.CPUNS != nil {
				t += *smp.CPUNS
			}
			smp.CPUNS = &t
		}
	}
	add := func(sum **uint64, v *uint64) {
		if v == nil {
			return
		}
		t := *v
		if *sum != nil {
			t += **sum
		}
		*sum = &t
	}
	for _, n := range body.NICs {
		add(&smp.RxBytes, n.Rx)
		add(&smp.TxBytes, n.Tx)
	}
	return smp, nil
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
	Project string   `json:"project_id"`
	CIDRs   []string `json:"-"`
}

// usableNetworks are the networks a launch without one chooses from, as
// Nova picks: the project's own and shared ones (an admin lists other
// projects' networks too, which it may name but is never given by
// default).
func usableNetworks(nets []Network, projectID string) []Network {
	var out []Network
	for _, n := range nets {
		if n.Shared || n.Project == projectID {
			out = append(out, n)
		}
	}
	return out
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

// addrOf is the address of an IPs() item ("net: 10.0.0.5" -> "10.0.0.5"),
// what a copy button copies.
func addrOf(item string) string {
	if _, a, ok := strings.Cut(item, ": "); ok {
		return a
	}
	return item
}

// netOf is the network of an IPs() item ("net: 10.0.0.5" -> "net"), "" without one.
func netOf(item string) string {
	if n, _, ok := strings.Cut(item, ": "); ok {
		return n
	}
	return ""
}

func joinOr(items []string, empty string) string {
	if len(items) == 0 {
		return empty
	}
	return strings.Join(items, ", ")
}
