package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ---- login and logout ----

type loginData struct {
	User, Project string
	Next          string // the page to go to after the login
}

// safeNext is next if it is a path on this portal, "/" otherwise: a
// login link cannot send the user to another site (no scheme, host or
// "//", and no backslash, which browsers read as a slash).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\x00\r\n") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || strings.HasPrefix(u.Path, "//") ||
		u.Path == "/login" || u.Path == "/logout" {
		return "/"
	}
	return next
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.session(r) != nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	v := view{Title: "Log in", Data: loginData{Project: r.URL.Query().Get("project"), Next: safeNext(r.URL.Query().Get("next"))}}
	if r.URL.Query().Get("expired") != "" {
		v.Error = "Your session has ended: log in again."
	}
	if r.URL.Query().Get("out") != "" {
		v.Notice = "You are logged out."
	}
	s.renderLogin(w, r, http.StatusOK, v)
}

// renderLogin shows the login form with a fresh login CSRF token, kept in
// a cookie of its own (double submit): there is no session yet.
func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, v view) {
	v.CSRF = randomToken()
	setCookie(w, r, loginCookie, v.CSRF, time.Now().Add(time.Hour))
	s.render(w, r, status, "login", v)
}

func (s *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	c, err := r.Cookie(loginCookie)
	if err != nil || !checkCSRF(r, c.Value) {
		s.render(w, r, http.StatusForbidden, "error", view{Title: "Forbidden",
			Error: "The form's security token (CSRF) is missing or wrong. Reload the login page and try again."})
		return
	}
	d := loginData{User: strings.TrimSpace(r.PostFormValue("user")), Project: strings.TrimSpace(r.PostFormValue("project")),
		Next: safeNext(r.PostFormValue("next"))}
	pass := r.PostFormValue("password")
	if d.Project == "" {
		d.Project = d.User
	}
	if d.User == "" || pass == "" {
		s.renderLogin(w, r, http.StatusBadRequest, view{Title: "Log in", Data: d, Error: "Enter your user name and password."})
		return
	}
	ctx := withClientAddress(r.Context(), r)
	addr := clientAddress(ctx)
	if wait := s.throttle.blocked(d.User, addr); wait > 0 {
		s.log.Warn("portal: login throttled", "user", d.User, "addr", addr)
		w.Header().Set("Retry-After", strconv.Itoa(int(wait.Seconds())+1))
		s.renderLogin(w, r, http.StatusTooManyRequests, view{Title: "Log in", Data: d,
			Error: fmt.Sprintf("Too many failed logins for %s from your address: try again in %d minutes.", d.User, int(wait.Minutes())+1)})
		return
	}
	sess, err := s.login(ctx, d.User, pass, d.Project)
	if err != nil {
		msg := "The identity service cannot be reached."
		st := statusOf(err)
		if ae, ok := err.(*APIError); ok {
			msg = ae.Message
		}
		if st == http.StatusUnauthorized {
			s.throttle.failed(d.User, addr)
			// Keystone's message for a bad password is deliberately vague;
			// say what the user can check.
			msg = "Wrong user name, password or project (" + msg + ")"
		}
		if st < 400 {
			st = http.StatusBadGateway
		}
		s.log.Info("portal: login refused", "user", d.User, "project", d.Project, "status", st)
		s.renderLogin(w, r, st, view{Title: "Log in", Data: d, Error: msg})
		return
	}
	s.throttle.succeeded(d.User, addr)
	setCookie(w, r, loginCookie, "", time.Time{})
	if max := time.Now().Add(maxSessionTTL); sess.Expires.After(max) {
		sess.Expires = max
	}
	// The cookie is a random ID of the session kept here, never the token.
	setCookie(w, r, sessionCookie, s.sess.add(sess), sess.Expires)
	s.log.Info("portal: login", "user", sess.User, "project", sess.Project)
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess *session) {
	if c, err := r.Cookie(sessionCookie); err == nil {
		s.sess.remove(c.Value)
	}
	if err := s.revoke(r.Context(), sess.Token); err != nil {
		s.log.Warn("portal: logout could not revoke the token", "user", sess.User, "err", err)
	}
	setCookie(w, r, sessionCookie, "", time.Time{})
	http.Redirect(w, r, "/login?out=1", http.StatusSeeOther)
}

// ---- overview ----

type overviewData struct {
	Limits  *Limits
	Servers int
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	l, err := s.limits(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Overview", err)
		return
	}
	s.render(w, r, http.StatusOK, "overview", view{Title: "Overview", Nav: "overview", Sess: sess, Data: overviewData{Limits: l}})
}

// ---- servers ----

// serverRow is a server as the list shows it (and the list's script gets it).
type serverRow struct {
	ID      string   `json:"id"`
	Name    string   `json:"name"`
	Status  string   `json:"status"`
	Task    string   `json:"task"`
	Class   string   `json:"class"`
	IPs     []string `json:"ips"`
	Flavor  string   `json:"flavor"`
	Image   string   `json:"image"`
	Created string   `json:"created"`
}

type serversData struct {
	Rows   []serverRow
	Marker string
	Next   string
	Limit  int
}

// catalogNames fetches flavor and image names for display; failing that
// (a flavor hidden from the project) rows show ids.
func (s *Server) catalogNames(ctx context.Context, sess *session) (flavors, images map[string]string) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		fl, _ := s.flavors(ctx, sess)
		flavors = names(fl, func(f Flavor) string { return f.ID }, func(f Flavor) string { return f.Name })
	}()
	go func() {
		defer wg.Done()
		im, _ := s.images(ctx, sess)
		images = names(im, func(i Image) string { return i.ID }, func(i Image) string { return i.Name })
	}()
	wg.Wait()
	return flavors, images
}

func orID(names map[string]string, id string) string {
	if n := names[id]; n != "" {
		return n
	}
	if id == "" {
		return "-"
	}
	return id
}

func (s *Server) rows(ctx context.Context, sess *session, list []ServerView) []serverRow {
	fl, im := s.catalogNames(ctx, sess)
	out := make([]serverRow, 0, len(list))
	for i := range list {
		sv := &list[i]
		out = append(out, serverRow{ID: sv.ID, Name: sv.Name, Status: sv.Status, Task: sv.Task(), Class: statusClass(sv.Status),
			IPs: sv.IPs(), Flavor: orID(fl, sv.Flavor.ID), Image: orID(im, sv.ImageID()), Created: sv.Created})
	}
	return out
}

// pageArgs reads marker and limit (1..200, default the page size).
func (s *Server) pageArgs(r *http.Request) (string, int) {
	limit, err := strconv.Atoi(r.URL.Query().Get("limit"))
	if err != nil || limit <= 0 {
		limit = s.page
	}
	if limit > 200 {
		limit = 200
	}
	return r.URL.Query().Get("marker"), limit
}

func (s *Server) serversPage(w http.ResponseWriter, r *http.Request, sess *session) {
	marker, limit := s.pageArgs(r)
	list, next, err := s.listServers(r.Context(), sess, marker, limit)
	if err != nil {
		s.fail(w, r, sess, "Servers", err)
		return
	}
	v := view{Title: "Servers", Nav: "servers", Sess: sess,
		Data: serversData{Rows: s.rows(r.Context(), sess, list), Marker: marker, Next: next, Limit: limit}}
	v.Notice = doneMessage(r.URL.Query().Get("done"))
	s.render(w, r, http.StatusOK, "servers", v)
}

// serversJSON is the page of servers the list's script polls.
func (s *Server) serversJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	marker, limit := s.pageArgs(r)
	list, next, err := s.listServers(r.Context(), sess, marker, limit)
	if err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"servers": s.rows(r.Context(), sess, list), "next": next})
}

func (s *Server) serverJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	sv, err := s.getServer(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": sv.ID, "status": sv.Status, "task": sv.Task(),
		"class": statusClass(sv.Status), "ips": sv.IPs()})
}

// doneMessage is the notice after a redirect; a fixed set, so a link
// cannot make the portal say anything else.
func doneMessage(code string) string {
	msg := map[string]string{
		"launched":            "Launch requested: the servers appear below and turn ACTIVE when they run.",
		"start":               "Start requested.",
		"stop":                "Stop requested.",
		"reboot":              "Reboot requested.",
		"delete":              "Delete requested: the server disappears once it is gone.",
		"pause":               "Pause requested: the server's processes are frozen until you unpause it.",
		"unpause":             "Unpause requested.",
		"suspend":             "Suspend requested: the server's processes are frozen, memory kept, until you resume it.",
		"resume":              "Resume requested.",
		"resize":              "Resize requested: when the server shows VERIFY_RESIZE, confirm the new flavor or revert to the old one.",
		"confirmResize":       "Resize confirmed.",
		"revertResize":        "Resize reverted: the server goes back to its old flavor.",
		"snapshot":            "Snapshot requested: the image is listed below and turns active once it is uploaded.",
		"migrate":             "Migration requested.",
		"rebuild":             "Rebuild requested: the server comes back on its new image, with its addresses and key.",
		"keypair":             "Key pair added.",
		"keypair-deleted":     "Key pair deleted.",
		"sg-created":          "Security group created: it admits nothing until you add rules (its egress rules let servers out).",
		"sg-deleted":          "Security group deleted.",
		"rule-added":          "Rule added: servers in the group get it within seconds.",
		"rule-deleted":        "Rule deleted: connections it admitted are refused from now on.",
		"rename":              "Server renamed.",
		"lock":                "Server locked: only an admin can act on it until it is unlocked.",
		"unlock":              "Server unlocked.",
		"shelve":              "Shelve requested: the server stops, is saved as an image and leaves its host (SHELVED_OFFLOADED); Unshelve brings it back.",
		"unshelve":            "Unshelve requested: the server is placed on a host and starts again.",
		"rescue":              "Rescue requested: a rescue system runs with the server's disk at /mnt (use the terminal); Unrescue starts the server again.",
		"unrescue":            "Unrescue requested: the server starts again with any fixes made to its disk.",
		"addSecurityGroup":    "Security group added to the server.",
		"removeSecurityGroup": "Security group removed from the server.",
		"attach":              "Attach requested: the volume turns in-use once it is mounted in the server.",
		"detach":              "Detach requested: the volume turns available once it is unmounted.",
	}[code]
	if msg != "" {
		return msg
	}
	return manageDone[code]
}

// diagnosticsJSON is one diagnostics sample for the detail page's charts.
func (s *Server) diagnosticsJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	smp, err := s.diagnostics(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, smp)
}

// ---- server detail ----

type serverData struct {
	Server  *ServerView
	Flavor  *Flavor
	Flavors []Flavor // the resize picker's choices
	// Resize is the resize menu: every flavor, those the API would refuse
	// (the current one, a smaller disk) disabled with the reason.
	Resize    []resizeChoice
	CanResize bool
	Images    []Image // the rebuild picker's choices
	Image     string
	IPs       []string
	Actions   []InstanceAction
	Host      string
	Task      string
	Class     string
	Console   string
	Lines     int
	// LastFailure is the newest failed action, said as "<action> at
	// <time> failed" and why where the API tells (shown when the server
	// has no fault: Nova shows one on ERROR servers only).
	LastFailure string
	// Groups are the server's security groups, Available the project's
	// others (the add picker's choices).
	Groups, Available []SecurityGroup
	// Locked is Nova's lock (2.9).
	Locked bool
	serverVolumes
}

func (s *Server) serverData(ctx context.Context, sess *session, id string) (*serverData, error) {
	sv, err := s.getServer(ctx, sess, id)
	if err != nil {
		return nil, err
	}
	d := &serverData{Server: sv, IPs: sv.IPs(), Task: sv.Task(), Class: statusClass(sv.Status)}
	if sv.Host != nil {
		d.Host = *sv.Host
	}
	d.Flavors, _ = s.flavors(ctx, sess)
	for i := range d.Flavors {
		if d.Flavors[i].ID == sv.Flavor.ID {
			d.Flavor = &d.Flavors[i]
		}
	}
	lim, _ := s.limits(ctx, sess) // without limits the menu checks disks only
	d.Resize, d.CanResize = resizeChoices(d.Flavors, d.Flavor, sv.Flavor.ID, lim)
	d.Images, _ = s.images(ctx, sess)
	d.Image = orID(names(d.Images, func(i Image) string { return i.ID }, func(i Image) string { return i.Name }), sv.ImageID())
	var lk struct {
		Server struct {
			Locked bool `json:"locked"`
		} `json:"server"`
	}
	if _, err := s.up.doAt(ctx, "compute", "2.9", sess.Token, http.MethodGet, s.ep.Compute+"/servers/"+url.PathEscape(id), nil, &lk); err == nil {
		d.Locked = lk.Server.Locked
	}
	d.Groups, _ = s.serverGroups(ctx, sess, id)
	if all, err := s.securityGroups(ctx, sess); err == nil {
		in := map[string]bool{}
		for _, g := range d.Groups {
			in[g.Name] = true
		}
		for _, g := range all {
			if !in[g.Name] {
				d.Available = append(d.Available, g)
			}
		}
	}
	s.serverVolumeData(ctx, sess, d)
	d.Actions, err = s.instanceActions(ctx, sess, id)
	if err != nil {
		return nil, err
	}
	for i := range d.Actions {
		a := &d.Actions[i]
		if !a.Failed() {
			continue
		}
		d.LastFailure = fmt.Sprintf("%s at %s failed", a.Action, a.StartTime)
		if why := a.Why(); why != "" {
			d.LastFailure += ": " + why
		}
		break
	}
	return d, nil
}

func (s *Server) serverPage(w http.ResponseWriter, r *http.Request, sess *session) {
	id := r.PathValue("id")
	if f, ok := s.sess.takeFlash(sess, "server "+id); ok {
		s.renderServer(w, r, sess, id, f.Status, "", f.Error)
		return
	}
	s.renderServer(w, r, sess, id, http.StatusOK, doneMessage(r.URL.Query().Get("done")), "")
}

// renderServer shows the detail page, with a notice or the error of an
// action the user just tried (so it reads where they clicked).
func (s *Server) renderServer(w http.ResponseWriter, r *http.Request, sess *session, id string, status int, notice, errMsg string) {
	d, err := s.serverData(r.Context(), sess, id)
	if err != nil {
		s.fail(w, r, sess, "Server", err)
		return
	}
	v := view{Title: d.Server.Name, Nav: "servers", Sess: sess, Data: d, Notice: notice, Error: errMsg}
	s.render(w, r, status, "server", v)
}

func (s *Server) consolePage(w http.ResponseWriter, r *http.Request, sess *session) {
	lines, err := strconv.Atoi(r.URL.Query().Get("lines"))
	if err != nil || lines <= 0 || lines > 10000 {
		lines = 100
	}
	sv, err := s.getServer(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, sess, "Console output", err)
		return
	}
	out, err := s.consoleOutput(r.Context(), sess, sv.ID, lines)
	if err != nil {
		s.fail(w, r, sess, "Console output", err)
		return
	}
	s.render(w, r, http.StatusOK, "console", view{Title: "Console of " + sv.Name, Nav: "servers", Sess: sess,
		Data: serverData{Server: sv, Console: out, Lines: lines}})
}

type confirmData struct {
	Server *ServerView
	Action string
	// Image is a rebuild's new image (ID and name).
	Image, ImageName string
}

// destructive actions are confirmed on a page of their own (a form, so it
// works without script and cannot be triggered by a link).
var destructive = map[string]bool{"stop": true, "reboot": true, "delete": true, "rebuild": true}

func (s *Server) confirmPage(w http.ResponseWriter, r *http.Request, sess *session) {
	action := r.URL.Query().Get("action")
	if !destructive[action] {
		s.render(w, r, http.StatusBadRequest, "error", view{Title: "Unknown action", Sess: sess, Error: "There is no action " + strconv.Quote(action) + " to confirm."})
		return
	}
	sv, err := s.getServer(r.Context(), sess, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, sess, "Confirm", err)
		return
	}
	d := confirmData{Server: sv, Action: action}
	if action == "rebuild" {
		d.Image = r.URL.Query().Get("image")
		if d.Image == "" {
			s.renderServer(w, r, sess, sv.ID, http.StatusBadRequest, "", "Choose the image to rebuild the server with.")
			return
		}
		_, im := s.catalogNames(r.Context(), sess)
		d.ImageName = orID(im, d.Image)
	}
	s.render(w, r, http.StatusOK, "confirm", view{Title: "Confirm " + action, Nav: "servers", Sess: sess, Data: d})
}

func (s *Server) actionPost(w http.ResponseWriter, r *http.Request, sess *session) {
	id, action := r.PathValue("id"), r.PostFormValue("action")
	if destructive[action] && r.PostFormValue("confirmed") != "yes" {
		q := url.Values{"action": {action}}
		if img := r.PostFormValue("image"); img != "" {
			q.Set("image", img)
		}
		http.Redirect(w, r, "/servers/"+url.PathEscape(id)+"/confirm?"+q.Encode(), http.StatusSeeOther)
		return
	}
	args := ActionArgs{Flavor: r.PostFormValue("flavor"), Name: r.PostFormValue("name"), Host: r.PostFormValue("host"),
		Image: r.PostFormValue("image"), Group: r.PostFormValue("group")}
	if err := s.serverAction(r.Context(), sess, id, action, args); err != nil {
		st := statusOf(err)
		if st == http.StatusUnauthorized || st == http.StatusNotFound || action == "delete" {
			s.fail(w, r, sess, "Server action", err)
			return
		}
		if st < 400 {
			st = http.StatusBadGateway
		}
		// POST-redirect-GET: the refusal shows on the server's page, and
		// a reload of it does not ask again.
		s.sess.setFlash(sess, "server "+id, flash{Status: st, Error: messageOf(err)})
		http.Redirect(w, r, "/servers/"+url.PathEscape(id), http.StatusSeeOther)
		return
	}
	s.log.Info("portal: server action", "user", sess.User, "project", sess.Project, "server", id, "action", action)
	switch action {
	case "delete":
		http.Redirect(w, r, "/servers?done=delete", http.StatusSeeOther)
	case "snapshot":
		// The new image is what the user wants to see next.
		http.Redirect(w, r, "/images?done=snapshot", http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/servers/"+url.PathEscape(id)+"?done="+url.QueryEscape(action), http.StatusSeeOther)
	}
}

// resizeChoice is one flavor of the resize menu.
type resizeChoice struct {
	Flavor Flavor
	Why    string // why it cannot be picked, "" when it can
	Pick   bool   // preselected
}

// resizeChoices marks the flavors the compute API refuses for a resize
// from cur (id curID): the same flavor, any with a smaller root disk
// ("Resizing to a smaller disk flavor is not allowed"), and any whose
// growth in vCPUs or RAM the project's quota (lim, if known) does not
// leave. The first that fits is preselected.
func resizeChoices(flavors []Flavor, cur *Flavor, curID string, lim *Limits) ([]resizeChoice, bool) {
	out := make([]resizeChoice, 0, len(flavors))
	picked := false
	for _, f := range flavors {
		c := resizeChoice{Flavor: f}
		switch {
		case f.ID == curID:
			c.Why = "current"
		case cur != nil && f.Disk < cur.Disk:
			c.Why = fmt.Sprintf("disk %d GB is smaller than the server's %d GB", f.Disk, cur.Disk)
		case cur != nil && lim != nil && lim.MaxCores >= 0 && lim.UsedCores+f.VCPUs-cur.VCPUs > lim.MaxCores:
			c.Why = fmt.Sprintf("needs %d more vCPUs, the quota leaves %d", f.VCPUs-cur.VCPUs, max(0, lim.MaxCores-lim.UsedCores))
		case cur != nil && lim != nil && lim.MaxRAM >= 0 && lim.UsedRAM+f.RAM-cur.RAM > lim.MaxRAM:
			c.Why = fmt.Sprintf("needs %d MB more RAM, the quota leaves %d MB", f.RAM-cur.RAM, max(0, lim.MaxRAM-lim.UsedRAM))
		case !picked:
			c.Pick, picked = true, true
		}
		out = append(out, c)
	}
	return out, picked
}

// ---- launch ----

type launchData struct {
	Req LaunchRequest
	// Limits are the project's quota and usage (nil when the API did not
	// say): the form shows what is left and offers no Launch when no
	// server is.
	Limits   *Limits
	Images   []Image
	Flavors  []Flavor
	Networks []Network
	Keypairs []Keypair
	Groups   []SecurityGroup
	Zones    []Zone
	// TagText is the tags field as typed.
	TagText string
	// MaxUserData is the user data limit in bytes, for the form.
	MaxUserData int
	// Usable is how many networks a launch without one would choose
	// from: with more than one the API refuses such a launch, so the form
	// makes the user pick; with one it is preselected; with none the
	// server gets no network.
	Usable int
}

func (s *Server) launchChoices(ctx context.Context, sess *session, d *launchData) error {
	var err error
	if d.Images, err = s.images(ctx, sess); err != nil {
		return err
	}
	if d.Flavors, err = s.flavors(ctx, sess); err != nil {
		return err
	}
	if d.Networks, err = s.networks(ctx, sess); err != nil {
		return err
	}
	if l, err := s.limits(ctx, sess); err == nil {
		d.Limits = l
	}
	usable := usableNetworks(d.Networks, sess.ProjectID)
	d.Usable = len(usable)
	if d.Req.Network == "" && len(usable) == 1 {
		d.Req.Network = usable[0].ID
	}
	d.Groups, _ = s.securityGroups(ctx, sess)
	d.Zones, _ = s.zones(ctx, sess)
	d.MaxUserData = maxUserData
	d.Keypairs, err = s.keypairs(ctx, sess)
	return err
}

func (s *Server) launchPage(w http.ResponseWriter, r *http.Request, sess *session) {
	d := launchData{Req: LaunchRequest{Count: 1}}
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "launch"); ok {
		// The form the launch was refused for, as the user filled it.
		status, errMsg = f.Status, f.Error
		d.Req = LaunchRequest{Name: f.Form["name"], Image: f.Form["image"], Flavor: f.Form["flavor"], Network: f.Form["network"],
			FixedIP: f.Form["fixed_ip"], KeyName: f.Form["key_name"], UserData: f.Form["user_data"], Zone: f.Form["zone"],
			Groups: strings.FieldsFunc(f.Form["security_groups"], func(r rune) bool { return r == '\n' })}
		d.TagText = f.Form["tags"]
		d.Req.Count, _ = strconv.Atoi(f.Form["count"])
		d.Req.MaxCount, _ = strconv.Atoi(f.Form["max_count"])
	}
	if err := s.launchChoices(r.Context(), sess, &d); err != nil {
		s.fail(w, r, sess, "Launch", err)
		return
	}
	s.render(w, r, status, "launch", view{Title: "Launch servers", Nav: "launch", Sess: sess, Data: d, Error: errMsg})
}

func (s *Server) launchPost(w http.ResponseWriter, r *http.Request, sess *session) {
	req := LaunchRequest{Name: strings.TrimSpace(r.PostFormValue("name")), Image: r.PostFormValue("image"),
		Flavor: r.PostFormValue("flavor"), Network: r.PostFormValue("network"), FixedIP: strings.TrimSpace(r.PostFormValue("fixed_ip")),
		KeyName: r.PostFormValue("key_name"), Groups: r.PostForm["security_groups"], UserData: r.PostFormValue("user_data"),
		Zone: r.PostFormValue("zone")}
	// Browsers send a textarea's line breaks as CRLF; a script with them
	// would not run (#!/bin/sh\r).
	req.UserData = strings.ReplaceAll(req.UserData, "\r\n", "\n")
	var msg string
	count, err := strconv.Atoi(strings.TrimSpace(r.PostFormValue("count")))
	maxCount := count
	maxText := strings.TrimSpace(r.PostFormValue("max_count"))
	var maxErr error
	if maxText != "" {
		maxCount, maxErr = strconv.Atoi(maxText)
	}
	tags, tagMsg := parseTags(r.PostFormValue("tags"))
	switch {
	case err != nil || count < 1 || count > 100:
		msg = "Count must be a whole number from 1 to 100."
	case maxErr != nil || maxCount < count || maxCount > 100:
		msg = "The most servers must be a whole number from the count to 100."
	case len(req.UserData) > maxUserData:
		msg = fmt.Sprintf("User data is at most %d bytes (Nova's 65,535 base64 characters); this is %d.", maxUserData, len(req.UserData))
	case tagMsg != "":
		msg = tagMsg
	case req.Name == "":
		msg = "Give the server a name."
	case req.FixedIP != "" && req.Network == "":
		msg = "A fixed IP needs a network: choose one."
	case req.Network == "":
		// Nova refuses a launch without a network when the project sees
		// several; say so in the form's words before asking it.
		nets, err := s.networks(r.Context(), sess)
		if err == nil && len(usableNetworks(nets, sess.ProjectID)) > 1 {
			msg = "Choose a network: this project can use several."
		}
	}
	req.Count, req.MaxCount, req.Tags = count, maxCount, tags
	if msg == "" {
		err := s.createServer(r.Context(), sess, req)
		if err == nil {
			s.log.Info("portal: launch", "user", sess.User, "project", sess.Project, "name", req.Name, "count", count, "max_count", maxCount)
			http.Redirect(w, r, "/servers?done=launched", http.StatusSeeOther)
			return
		}
		if statusOf(err) == http.StatusUnauthorized {
			s.fail(w, r, sess, "Launch", err)
			return
		}
		msg = err.Error()
		if ae, ok := err.(*APIError); ok {
			msg = ae.Message
		}
	}
	// POST-redirect-GET: the form comes back with the error and what was
	// typed, and a reload of it does not launch again.
	s.sess.setFlash(sess, "launch", flash{Status: http.StatusBadRequest, Error: msg, Form: map[string]string{"name": req.Name,
		"image": req.Image, "flavor": req.Flavor, "network": req.Network, "fixed_ip": req.FixedIP, "key_name": req.KeyName,
		"count": strings.TrimSpace(r.PostFormValue("count")), "max_count": maxText, "user_data": req.UserData, "zone": req.Zone,
		"tags": r.PostFormValue("tags"), "security_groups": strings.Join(req.Groups, "\n")}})
	http.Redirect(w, r, "/launch", http.StatusSeeOther)
}

// ---- lists ----

// imagesJSON is the images list the Images page's script polls, so a
// snapshot's status changes in place (queued, saving, active).
func (s *Server) imagesJSON(w http.ResponseWriter, r *http.Request, sess *session) {
	im, err := s.images(r.Context(), sess)
	if err != nil {
		s.failJSON(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": im})
}

func (s *Server) flavorsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	fl, err := s.flavors(r.Context(), sess)
	if err != nil {
		s.fail(w, r, sess, "Flavors", err)
		return
	}
	s.render(w, r, http.StatusOK, "flavors", view{Title: "Flavors", Nav: "flavors", Sess: sess, Data: fl})
}
