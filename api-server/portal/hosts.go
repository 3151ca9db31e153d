package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The Hosts page is for cloud administrators: the compute hosts with
// their state, capacity and servers, the migrations and the hosts'
// events. Every call it makes is admin-only in the API too; the portal
// refuses members first only so they get a plain page rather than a
// string of 403s.

// computeBinary is the service whose hosts run servers.
const computeBinary = "nova-compute"

// Hypervisor is a compute host's capacity and usage (os-hypervisors).
type Hypervisor struct {
	Hostname   string `json:"hypervisor_hostname"`
	State      string `json:"state"`
	Status     string `json:"status"`
	VCPUs      int    `json:"vcpus"`
	VCPUsUsed  int    `json:"vcpus_used"`
	MemoryMB   int    `json:"memory_mb"`
	MemoryUsed int    `json:"memory_mb_used"`
	DiskGB     int    `json:"local_gb"`
	DiskUsed   int    `json:"local_gb_used"`
	RunningVMs int    `json:"running_vms"`
}

// ComputeService is a compute host's service record (os-services).
type ComputeService struct {
	Host           string  `json:"host"`
	State          string  `json:"state"`
	Status         string  `json:"status"`
	Zone           string  `json:"zone"`
	UpdatedAt      *string `json:"updated_at"`
	DisabledReason *string `json:"disabled_reason"`
}

// AdminServer is a server as an admin's list shows it.
type AdminServer struct {
	ServerView
	ProjectID string `json:"tenant_id"`
}

// Migration is one entry of os-migrations (2.59).
type Migration struct {
	ID         int    `json:"id"`
	UUID       string `json:"uuid"`
	Status     string `json:"status"`
	InstanceID string `json:"instance_uuid"`
	Source     string `json:"source_compute"`
	Dest       string `json:"dest_compute"`
	Type       string `json:"migration_type"`
	OldFlavor  any    `json:"old_instance_type_id"`
	NewFlavor  any    `json:"new_instance_type_id"`
	CreatedAt  string `json:"created_at"`
	UpdatedAt  string `json:"updated_at"`
}

// HostEvent is one entry of Capsule's os-host-events extension.
type HostEvent struct {
	ID         string   `json:"id"`
	Host       string   `json:"host"`
	InstanceID string   `json:"instance_uuid"`
	ProjectID  string   `json:"project_id"`
	Kind       string   `json:"kind"`
	Severity   string   `json:"severity"`
	Message    string   `json:"message"`
	Value      *float64 `json:"value"`
	Threshold  *float64 `json:"threshold"`
	CreatedAt  string   `json:"created_at"`
}

// hostRow is one compute host on the page.
type hostRow struct {
	Name    string
	State   string // up, down
	Status  string // enabled, disabled
	Reason  string
	Zone    string
	Updated string
	HV      *Hypervisor
	Servers []AdminServer
	// Targets are the other hosts that are up and enabled: where the
	// scheduler may move the host's servers (the migrate picker's
	// choices). Without any, a migration can only fail.
	Targets []string
	Err     string // its servers could not be listed
}

// NoTarget says why the host's servers cannot be migrated, "" when they
// can.
func (h *hostRow) NoTarget() string {
	if len(h.Targets) > 0 {
		return ""
	}
	return "No other host is up and enabled: there is nowhere to migrate to."
}

// Up reports whether the host's service reports in.
func (h *hostRow) Up() bool { return h.State == "up" }

// Enabled reports whether the scheduler may place servers on the host.
func (h *hostRow) Enabled() bool { return h.Status != "disabled" }

type migrationRow struct {
	Migration
	Server string // the server's name, when it is listed under a host
	Verify bool   // the server waits in VERIFY_RESIZE
	Why    string // why a failed migration failed, where the API tells
}

// Failed reports whether the migration ended in error.
func (m *migrationRow) Failed() bool { return migrationFailed(m.Status) }

func migrationFailed(status string) bool { return status == "error" || status == "failed" }

type hostsData struct {
	Hosts      []*hostRow
	Migrations []migrationRow
	Events     []HostEvent
	EventsNote string // why there are no events to show
	// Watch is the server whose migration was just requested: the page
	// follows it to its outcome.
	Watch string
}

func (s *Server) hypervisors(ctx context.Context, sess *session) ([]Hypervisor, error) {
	var body struct {
		Hypervisors []Hypervisor `json:"hypervisors"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/os-hypervisors/detail", nil, &body)
	return body.Hypervisors, err
}

func (s *Server) computeServices(ctx context.Context, sess *session) ([]ComputeService, error) {
	var body struct {
		Services []ComputeService `json:"services"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/os-services?binary="+computeBinary, nil, &body)
	return body.Services, err
}

// hostServers lists every project's servers on host.
func (s *Server) hostServers(ctx context.Context, sess *session, host string) ([]AdminServer, error) {
	var body struct {
		Servers []AdminServer `json:"servers"`
	}
	q := url.Values{"all_tenants": {"1"}, "host": {host}}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/detail?"+q.Encode(), nil, &body)
	sort.Slice(body.Servers, func(i, j int) bool { return body.Servers[i].Name < body.Servers[j].Name })
	return body.Servers, err
}

func (s *Server) migrations(ctx context.Context, sess *session) ([]Migration, error) {
	var body struct {
		Migrations []Migration `json:"migrations"`
	}
	_, err := s.up.doAt(ctx, "compute", "2.59", sess.Token, http.MethodGet, s.ep.Compute+"/os-migrations", nil, &body)
	return body.Migrations, err
}

// hostEvents reads Capsule's os-host-events; a compute API without the
// extension (404) has none to show, which is no error.
func (s *Server) hostEvents(ctx context.Context, sess *session) ([]HostEvent, bool, error) {
	var body struct {
		Events []HostEvent `json:"host_events"`
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/os-host-events?limit="+strconv.Itoa(maxListed), nil, &body)
	if statusOf(err) == http.StatusNotFound {
		return nil, false, nil
	}
	sort.SliceStable(body.Events, func(i, j int) bool { return body.Events[i].CreatedAt > body.Events[j].CreatedAt })
	return body.Events, true, err
}

// setHostEnabled enables or disables a host's compute service (the
// pre-2.53 form, by host and binary).
func (s *Server) setHostEnabled(ctx context.Context, sess *session, host string, enable bool) error {
	action := "disable"
	if enable {
		action = "enable"
	}
	_, err := s.up.do(ctx, "compute", sess.Token, http.MethodPut, s.ep.Compute+"/os-services/"+action,
		map[string]string{"host": host, "binary": computeBinary}, nil)
	return err
}

// maxExplained bounds how many failed migrations the Hosts page explains.
const maxExplained = 5

// migrationFailure is why the server's newest migration failed: its
// newest failed migrate (or resize) action's reason, "" if unknown.
func (s *Server) migrationFailure(ctx context.Context, sess *session, id string) string {
	acts, err := s.instanceActions(ctx, sess, id)
	if err != nil {
		return ""
	}
	for i := range acts {
		a := &acts[i]
		if a.Action != "migrate" && a.Action != "resize" {
			continue
		}
		if a.Failed() {
			return a.Why()
		}
		return ""
	}
	return ""
}

// migrationOutcome is where the server's newest migration stands, for
// the Hosts page's script: running until it settles, then done or failed
// with the reason.
type migrationOutcome struct {
	State   string `json:"state"` // none, running, done, failed
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (s *Server) serverMigration(ctx context.Context, sess *session, id string) (*migrationOutcome, error) {
	var body struct {
		Migrations []Migration `json:"migrations"`
	}
	_, err := s.up.doAt(ctx, "compute", "2.59", sess.Token, http.MethodGet, s.ep.Compute+"/os-migrations?instance_uuid="+url.QueryEscape(id), nil, &body)
	if err != nil {
		return nil, err
	}
	if len(body.Migrations) == 0 {
		return &migrationOutcome{State: "none", Message: "The server has no migration."}, nil
	}
	m := body.Migrations[0] // newest first
	for _, o := range body.Migrations[1:] {
		if o.CreatedAt > m.CreatedAt || o.CreatedAt == m.CreatedAt && o.ID > m.ID {
			m = o
		}
	}
	name := id
	if sv, err := s.getServer(ctx, sess, id); err == nil && sv.Name != "" {
		name = sv.Name
	}
	out := &migrationOutcome{State: "running", Status: m.Status}
	switch {
	case migrationFailed(m.Status):
		out.State = "failed"
		out.Message = "The migration of " + name + " failed"
		if why := s.migrationFailure(ctx, sess, id); why != "" {
			out.Message += ": " + why
		} else {
			out.Message += "; the server's action log may say more."
		}
	case m.Status == "finished":
		out.State = "done"
		out.Message = name + " moved from " + m.Source + " to " + m.Dest + ": confirm or revert the migration below."
	case m.Status == "confirmed":
		out.State = "done"
		out.Message = name + " migrated from " + m.Source + " to " + m.Dest + "."
	case m.Status == "reverted":
		out.State = "done"
		out.Message = "The migration of " + name + " was reverted: it runs on " + m.Source + "."
	default:
		out.Message = "Migrating " + name + " (" + m.Status + ")…"
	}
	return out, nil
}

// serverMigrationJSON is the outcome the Hosts page's script polls.
func (s *Server) serverMigrationJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	if !sess.Admin {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "Migrations are for cloud administrators."})
		return
	}
	out, err := s.serverMigration(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// maxListed bounds the migrations and events lists: the newest matter.
const maxListed = 50

// hostsData gathers the page: hosts from services and hypervisors, their
// servers, migrations and events, fetched side by side.
func (s *Server) hostsData(ctx context.Context, sess *session) (*hostsData, error) {
	var (
		wg            sync.WaitGroup
		svcs          []ComputeService
		hvs           []Hypervisor
		migs          []Migration
		evs           []HostEvent
		evOK          bool
		svcErr, hvErr error
		migErr, evErr error
		hostNames     []string
		hostsByName   = map[string]*hostRow{}
		d             = &hostsData{}
	)
	wg.Add(4)
	go func() { defer wg.Done(); svcs, svcErr = s.computeServices(ctx, sess) }()
	go func() { defer wg.Done(); hvs, hvErr = s.hypervisors(ctx, sess) }()
	go func() { defer wg.Done(); migs, migErr = s.migrations(ctx, sess) }()
	go func() { defer wg.Done(); evs, evOK, evErr = s.hostEvents(ctx, sess) }()
	wg.Wait()
	// Services and hypervisors are the page; without them it fails (and
	// a member's 403 or an expired token is reported as such).
	if svcErr != nil {
		return nil, svcErr
	}
	if hvErr != nil {
		return nil, hvErr
	}
	row := func(name string) *hostRow {
		if h := hostsByName[name]; h != nil {
			return h
		}
		h := &hostRow{Name: name, State: "down", Status: "enabled"}
		hostsByName[name] = h
		hostNames = append(hostNames, name)
		return h
	}
	for _, sv := range svcs {
		h := row(sv.Host)
		h.State, h.Status, h.Zone = sv.State, sv.Status, sv.Zone
		if sv.DisabledReason != nil {
			h.Reason = *sv.DisabledReason
		}
		if sv.UpdatedAt != nil {
			h.Updated = *sv.UpdatedAt
		}
	}
	for i := range hvs {
		h := row(hvs[i].Hostname)
		h.HV = &hvs[i]
	}
	sort.Strings(hostNames)
	for _, n := range hostNames {
		h := hostsByName[n]
		for _, o := range hostNames {
			if oh := hostsByName[o]; o != n && oh.Up() && oh.Enabled() {
				h.Targets = append(h.Targets, o)
			}
		}
		d.Hosts = append(d.Hosts, h)
	}
	status := map[string]*AdminServer{}
	var mu sync.Mutex
	for _, h := range d.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			list, err := s.hostServers(ctx, sess, h.Name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				h.Err = messageOf(err)
				return
			}
			h.Servers = list
			for i := range list {
				status[list[i].ID] = &list[i]
			}
		}()
	}
	wg.Wait()
	if migErr != nil {
		return nil, migErr
	}
	for _, m := range migs[:min(len(migs), maxListed)] {
		mr := migrationRow{Migration: m}
		if sv := status[m.InstanceID]; sv != nil {
			mr.Server = sv.Name
			mr.Verify = sv.Status == "VERIFY_RESIZE" && m.Status == "finished"
		}
		d.Migrations = append(d.Migrations, mr)
	}
	// Why the newest failed migrations failed: their server's failed
	// migrate action says (one call each, so a few only).
	failed := 0
	for i := range d.Migrations {
		m := &d.Migrations[i]
		if !m.Failed() || failed == maxExplained {
			continue
		}
		failed++
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.Why = s.migrationFailure(ctx, sess, m.InstanceID)
		}()
	}
	wg.Wait()
	switch {
	case evErr != nil:
		d.EventsNote = "The host events could not be read: " + messageOf(evErr)
	case !evOK:
		d.EventsNote = "No events: this cloud's compute API has no host events (os-host-events)."
	case len(evs) == 0:
		d.EventsNote = "No events."
	}
	d.Events = evs[:min(len(evs), maxListed)]
	return d, nil
}

// messageOf is what a page says about err: the API's own message, or a
// plain sentence for anything else.
func messageOf(err error) string {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Message
	}
	return "The cloud's API gave an answer the portal does not understand."
}

// adminOnly runs h for sessions with the admin role; members get a 403
// page (the API would refuse each call anyway).
func (s *Server) adminOnly(h sessHandler) sessHandler {
	return func(w http.ResponseWriter, r *http.Request, sess *session) {
		if !sess.Admin {
			s.render(w, r, http.StatusForbidden, "error", view{Title: "Forbidden", Sess: sess,
				Error: "This page is for cloud administrators: your role in this project is not admin."})
			return
		}
		h(w, r, sess)
	}
}

func (s *Server) hostsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	if f, ok := s.sess.takeFlash(sess, "hosts"); ok {
		s.renderHosts(w, r, sess, f.Status, "", f.Error, "")
		return
	}
	notice, watch := hostsDone(q.Get("done"), q.Get("host")), ""
	if q.Get("done") == "migrate" && q.Get("server") != "" {
		// The request was accepted, which says nothing of the outcome:
		// the page follows the migration instead of saying "done".
		notice, watch = "", q.Get("server")
	}
	s.renderHosts(w, r, sess, http.StatusOK, notice, "", watch)
}

// renderHosts shows the Hosts page with a notice or an error (the page
// itself stays, so the admin sees the error where they acted).
func (s *Server) renderHosts(w http.ResponseWriter, r *http.Request, sess *session, status int, notice, errMsg, watch string) {
	d, err := s.hostsData(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Hosts", err)
		return
	}
	d.Watch = watch
	s.render(w, r, status, "hosts", view{Title: "Hosts", Nav: "hosts", Sess: sess, Data: d, Notice: notice, Error: errMsg})
}

// hostsDone is the notice after a redirect: a fixed set, with the host
// name only from the query (escaped by the template).
func hostsDone(code, host string) string {
	switch code {
	case "enable":
		return "Host " + host + " is enabled: the scheduler places new servers on it."
	case "disable":
		return "Host " + host + " is disabled: the scheduler places no new servers on it; its servers keep running."
	case "migrate":
		return "Migration requested: follow it under Migrations; confirm or revert it once the server shows VERIFY_RESIZE."
	case "confirmResize":
		return "Migration confirmed."
	case "revertResize":
		return "Migration reverted."
	}
	return ""
}

// hostsResult redirects back to the Hosts page after an action, or shows
// the API's refusal on it.
func (s *Server) hostsResult(w http.ResponseWriter, r *http.Request, sess *session, done, host string, err error) {
	if err == nil {
		q := url.Values{"done": {done}}
		if host != "" {
			q.Set("host", host)
		}
		http.Redirect(w, r, "/hosts?"+q.Encode(), http.StatusSeeOther)
		return
	}
	st := statusOf(err)
	if st == http.StatusUnauthorized {
		s.fail(w, r, sess, "Hosts", err)
		return
	}
	if st < 400 {
		st = http.StatusBadGateway
	}
	// POST-redirect-GET: a reload of the Hosts page does not act again.
	s.sess.setFlash(sess, "hosts", flash{Status: st, Error: messageOf(err)})
	http.Redirect(w, r, "/hosts", http.StatusSeeOther)
}

func (s *Server) hostEnablePost(w http.ResponseWriter, r *http.Request, sess *session) {
	host := r.PathValue("host")
	enable := r.PathValue("op") == "enable"
	if op := r.PathValue("op"); op != "enable" && op != "disable" {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess, Error: "There is no host action " + op + "."})
		return
	}
	err := s.setHostEnabled(r.Context(), sess, host, enable)
	if err == nil {
		s.log.Info("portal: host "+r.PathValue("op"), "user", sess.User, "host", host)
	}
	s.hostsResult(w, r, sess, r.PathValue("op"), host, err)
}

// migratePost migrates one server (to the picked host, or where the
// scheduler finds room), or confirms or reverts its migration.
func (s *Server) migratePost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, op := r.PathValue("id"), r.PathValue("op")
	if op != "migrate" && op != "confirmResize" && op != "revertResize" {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Sess: sess, Error: "There is no server action " + op + " here."})
		return
	}
	err := s.serverAction(r.Context(), sess, id, op, ActionArgs{Host: strings.TrimSpace(r.PostFormValue("host"))})
	if err == nil {
		s.log.Info("portal: "+op, "user", sess.User, "server", id, "host", r.PostFormValue("host"))
	}
	if err == nil && op == "migrate" {
		http.Redirect(w, r, "/hosts?"+url.Values{"done": {op}, "server": {id}}.Encode(), http.StatusSeeOther)
		return
	}
	s.hostsResult(w, r, sess, op, "", err)
}

type evacuateResult struct {
	ID, Name, Project string
	Err               string
}

type evacuateData struct {
	Host string
	// Dead: the host's compute service is down (or forced down): its
	// servers are evacuated (rebuilt elsewhere from their images), not
	// cold-migrated, which needs the host's agent.
	Dead     bool
	Servers  []AdminServer
	NoTarget string // the warning when no other host can take the servers
	Disabled string // the refusal to disable the host, if any
	Results  []evacuateResult
	Done     bool
}

// evacuateTargets checks that host is a compute host (a 404 page when it
// is not, and false) and returns the warning when no other host is up
// and enabled to take its servers, and whether host is down.
func (s *Server) evacuateTargets(w http.ResponseWriter, r *http.Request, sess *session, host string) (string, bool, bool) {
	svcs, err := s.computeServices(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Evacuate", err)
		return "", false, false
	}
	known, dead, targets := false, false, 0
	for _, sv := range svcs {
		switch {
		case sv.Host == host:
			known, dead = true, sv.State == "down"
		case sv.State == "up" && sv.Status != "disabled":
			targets++
		}
	}
	if !known {
		s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Nav: "hosts", Sess: sess,
			Error: "There is no compute host " + strconv.Quote(host) + "."})
		return "", false, false
	}
	if targets == 0 {
		return "No other host is up and enabled: there is nowhere to move the servers, so each move would fail.", dead, true
	}
	return "", dead, true
}

// evacuatePage asks for confirmation, listing what will move.
func (s *Server) evacuatePage(w http.ResponseWriter, r *http.Request, sess *session) {
	host := r.PathValue("host")
	warn, dead, ok := s.evacuateTargets(w, r, sess, host)
	if !ok {
		return
	}
	list, err := s.hostServers(r.Context(), sess, host)
	if err != nil {
		s.fail(w, r, sess, "Evacuate", err)
		return
	}
	s.render(w, r, http.StatusOK, "evacuate", view{Title: "Evacuate " + host, Nav: "hosts", Sess: sess,
		Data: evacuateData{Host: host, Dead: dead, Servers: list, NoTarget: warn}})
}

// evacuatePost disables the host (so nothing new lands on it and the
// scheduler does not pick it back), then asks for a cold migration of
// each of its servers (a host that is up) or their evacuation (a host
// that is down: rebuilt elsewhere from their images), one after the
// other, and shows each answer.
func (s *Server) evacuatePost(w http.ResponseWriter, r *http.Request, sess *session) {
	host := r.PathValue("host")
	_, dead, ok := s.evacuateTargets(w, r, sess, host)
	if !ok {
		return
	}
	action := "migrate"
	if dead {
		action = "evacuate"
	}
	d := evacuateData{Host: host, Dead: dead, Done: true}
	if err := s.setHostEnabled(r.Context(), sess, host, false); err != nil {
		if statusOf(err) == http.StatusUnauthorized {
			s.fail(w, r, sess, "Evacuate", err)
			return
		}
		d.Disabled = messageOf(err)
	}
	list, err := s.hostServers(r.Context(), sess, host)
	if err != nil {
		s.fail(w, r, sess, "Evacuate", err)
		return
	}
	d.Servers = list
	for _, sv := range list {
		res := evacuateResult{ID: sv.ID, Name: sv.Name, Project: sv.ProjectID}
		if err := s.serverAction(r.Context(), sess, sv.ID, action, ActionArgs{}); err != nil {
			res.Err = messageOf(err)
		}
		d.Results = append(d.Results, res)
	}
	s.log.Info("portal: evacuate", "user", sess.User, "host", host, "servers", len(list), "action", action)
	s.render(w, r, http.StatusOK, "evacuate", view{Title: "Evacuate " + host, Nav: "hosts", Sess: sess, Data: d})
}
