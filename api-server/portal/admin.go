package portal

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The admin pages are for cloud administrators (the admin role on the
// admin project): every project's servers with the projects' names, the
// projects, users and role assignments (with forms to add a project, a
// user with a role, and a grant), each project's compute quota, and the
// migrations filtered by host, status and age. The APIs refuse members
// each call; the portal refuses them first with a plain page.

// Project is a Keystone project.
type Project struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Enabled     bool   `json:"enabled"`
	DomainID    string `json:"domain_id"`
}

// User is a Keystone user.
type User struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Enabled   bool   `json:"enabled"`
	DefaultID string `json:"default_project_id"`
}

// Role is a Keystone role.
type Role struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// Assignment is one row of role_assignments with names.
type Assignment struct {
	Role  Role `json:"role"`
	User  Role `json:"user"`
	Group Role `json:"group"`
	Scope struct {
		Project Role `json:"project"`
		Domain  Role `json:"domain"`
	} `json:"scope"`
}

func (s *Server) projects(ctx context.Context, sess *session) ([]Project, error) {
	var body struct {
		Projects []Project `json:"projects"`
	}
	_, err := s.up.do(ctx, "identity", sess.Token, http.MethodGet, s.ep.Identity+"/projects", nil, &body)
	sort.Slice(body.Projects, func(i, j int) bool { return body.Projects[i].Name < body.Projects[j].Name })
	return body.Projects, err
}

// projectNames maps project IDs to names ("" map when the identity
// service does not answer: pages then show IDs).
func (s *Server) projectNames(ctx context.Context, sess *session) map[string]string {
	ps, _ := s.projects(ctx, sess)
	return names(ps, func(p Project) string { return p.ID }, func(p Project) string { return p.Name })
}

// adminView is an admin page: its tab and its data.
type adminView struct {
	Tab  string
	Data any
}

// ---- servers ----

type adminServerRow struct {
	AdminServer
	Project string // the project's name (its ID when unknown)
}

func (s *Server) adminServersPage(w http.ResponseWriter, r *http.Request, sess *session) {
	var body struct {
		Servers []AdminServer `json:"servers"`
	}
	q := url.Values{"all_tenants": {"1"}, "limit": {"1000"}}
	if _, err := s.up.do(r.Context(), "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/detail?"+q.Encode(), nil, &body); err != nil {
		s.fail(w, r, sess, "All servers", err)
		return
	}
	pn := s.projectNames(r.Context(), sess)
	rows := make([]adminServerRow, 0, len(body.Servers))
	for _, sv := range body.Servers {
		rows = append(rows, adminServerRow{AdminServer: sv, Project: orID(pn, sv.ProjectID)})
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].Project != rows[j].Project {
			return rows[i].Project < rows[j].Project
		}
		return rows[i].Name < rows[j].Name
	})
	s.render(w, r, http.StatusOK, "admin", view{Title: "All servers", Nav: "admin", Sess: sess, Data: adminView{Tab: "servers", Data: rows}})
}

// ---- projects, users, roles ----

type identityData struct {
	Projects    []Project
	Users       []User
	Roles       []Role
	Assignments []Assignment
}

func (s *Server) adminProjectsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	var d identityData
	var err error
	if d.Projects, err = s.projects(ctx, sess); err != nil {
		s.fail(w, r, sess, "Projects", err)
		return
	}
	var ub struct {
		Users []User `json:"users"`
	}
	var rb struct {
		Roles []Role `json:"roles"`
	}
	var ab struct {
		Assignments []Assignment `json:"role_assignments"`
	}
	for _, c := range []struct {
		path string
		out  any
	}{{"/users", &ub}, {"/roles", &rb}, {"/role_assignments?include_names=true", &ab}} {
		if _, err := s.up.do(ctx, "identity", sess.Token, http.MethodGet, s.ep.Identity+c.path, nil, c.out); err != nil {
			s.fail(w, r, sess, "Projects", err)
			return
		}
	}
	d.Users, d.Roles, d.Assignments = ub.Users, rb.Roles, ab.Assignments
	sort.Slice(d.Users, func(i, j int) bool { return d.Users[i].Name < d.Users[j].Name })
	sort.Slice(d.Roles, func(i, j int) bool { return d.Roles[i].Name < d.Roles[j].Name })
	sort.SliceStable(d.Assignments, func(i, j int) bool {
		a, b := d.Assignments[i], d.Assignments[j]
		if a.Scope.Project.Name != b.Scope.Project.Name {
			return a.Scope.Project.Name < b.Scope.Project.Name
		}
		return a.User.Name+a.Group.Name < b.User.Name+b.Group.Name
	})
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "admin-projects"); ok {
		status, errMsg = f.Status, f.Error
	}
	s.render(w, r, status, "admin", view{Title: "Projects and users", Nav: "admin", Sess: sess, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done")), Data: adminView{Tab: "projects", Data: d}})
}

// adminResult ends an admin form (POST-redirect-GET).
func (s *Server) adminResult(w http.ResponseWriter, r *http.Request, sess *session, page, to, done string, err error) {
	if err != nil {
		st := statusOf(err)
		if st == http.StatusUnauthorized || st == 0 {
			s.fail(w, r, sess, "Admin", err)
			return
		}
		s.sess.setFlash(sess, page, flash{Status: st, Error: messageOf(err)})
		http.Redirect(w, r, to, http.StatusSeeOther)
		return
	}
	sep := "?"
	if strings.Contains(to, "?") {
		sep = "&"
	}
	http.Redirect(w, r, to+sep+"done="+done, http.StatusSeeOther)
}

func (s *Server) adminProjectPost(w http.ResponseWriter, r *http.Request, sess *session) {
	name := strings.TrimSpace(r.PostFormValue("name"))
	var err error
	if name == "" {
		err = badForm("Give the project a name.")
	} else {
		_, err = s.up.do(r.Context(), "identity", sess.Token, http.MethodPost, s.ep.Identity+"/projects",
			map[string]any{"project": map[string]any{"name": name, "description": strings.TrimSpace(r.PostFormValue("description")), "enabled": true}}, nil)
	}
	s.adminResult(w, r, sess, "admin-projects", "/admin/projects", "project-created", err)
}

func (s *Server) grant(ctx context.Context, sess *session, project, user, role string) error {
	_, err := s.up.do(ctx, "identity", sess.Token, http.MethodPut,
		s.ep.Identity+"/projects/"+url.PathEscape(project)+"/users/"+url.PathEscape(user)+"/roles/"+url.PathEscape(role), nil, nil)
	return err
}

// adminUserPost creates a user whose default project is the one chosen
// and grants it the role chosen there.
func (s *Server) adminUserPost(w http.ResponseWriter, r *http.Request, sess *session) {
	name, pass := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	project, role := r.PostFormValue("project"), r.PostFormValue("role")
	var err error
	switch {
	case name == "" || pass == "":
		err = badForm("Give the user a name and a password.")
	case project == "" || role == "":
		err = badForm("Choose the user's project and role.")
	}
	if err == nil {
		var body struct {
			User User `json:"user"`
		}
		_, err = s.up.do(r.Context(), "identity", sess.Token, http.MethodPost, s.ep.Identity+"/users",
			map[string]any{"user": map[string]any{"name": name, "password": pass, "default_project_id": project, "enabled": true}}, &body)
		if err == nil {
			err = s.grant(r.Context(), sess, project, body.User.ID, role)
		}
	}
	s.adminResult(w, r, sess, "admin-projects", "/admin/projects", "user-created", err)
}

func (s *Server) adminGrantPost(w http.ResponseWriter, r *http.Request, sess *session) {
	project, user, role := r.PostFormValue("project"), r.PostFormValue("user"), r.PostFormValue("role")
	var err error
	if project == "" || user == "" || role == "" {
		err = badForm("Choose a user, a project and a role.")
	} else {
		err = s.grant(r.Context(), sess, project, user, role)
	}
	s.adminResult(w, r, sess, "admin-projects", "/admin/projects", "role-granted", err)
}

// ---- quotas ----

// quotaKeys are the compute quotas the page edits, with their labels.
var quotaKeys = []struct{ Key, Label string }{
	{"instances", "Servers"}, {"cores", "vCPUs"}, {"ram", "RAM (MB)"}, {"key_pairs", "Key pairs"},
	{"server_groups", "Server groups"}, {"server_group_members", "Server group members"},
}

// QuotaRow is one quota: its limit and what the project uses.
type QuotaRow struct {
	Key, Label   string
	Limit, InUse int
}

type quotaData struct {
	Projects []Project
	Project  string // the chosen project's ID
	Name     string
	Rows     []QuotaRow
}

func (s *Server) adminQuotasPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	ps, err := s.projects(ctx, sess)
	if err != nil {
		s.fail(w, r, sess, "Quotas", err)
		return
	}
	d := quotaData{Projects: ps, Project: r.URL.Query().Get("project")}
	if d.Project == "" && len(ps) > 0 {
		d.Project = ps[0].ID
	}
	for _, p := range ps {
		if p.ID == d.Project {
			d.Name = p.Name
		}
	}
	if d.Project != "" {
		var body struct {
			Set map[string]any `json:"quota_set"`
		}
		if _, err := s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/os-quota-sets/"+url.PathEscape(d.Project)+"/detail", nil, &body); err != nil {
			s.fail(w, r, sess, "Quotas", err)
			return
		}
		for _, k := range quotaKeys {
			m, _ := body.Set[k.Key].(map[string]any)
			lim, _ := m["limit"].(float64)
			use, _ := m["in_use"].(float64)
			d.Rows = append(d.Rows, QuotaRow{Key: k.Key, Label: k.Label, Limit: int(lim), InUse: int(use)})
		}
	}
	status, errMsg := http.StatusOK, ""
	if f, ok := s.sess.takeFlash(sess, "admin-quotas"); ok {
		status, errMsg = f.Status, f.Error
	}
	s.render(w, r, status, "admin", view{Title: "Quotas", Nav: "admin", Sess: sess, Error: errMsg,
		Notice: doneMessage(r.URL.Query().Get("done")), Data: adminView{Tab: "quotas", Data: d}})
}

func (s *Server) adminQuotaPost(w http.ResponseWriter, r *http.Request, sess *session) {
	project := r.PathValue("project")
	set := map[string]int{}
	var err error
	for _, k := range quotaKeys {
		v := strings.TrimSpace(r.PostFormValue(k.Key))
		if v == "" {
			continue
		}
		n, perr := strconv.Atoi(v)
		if perr != nil || n < -1 {
			err = badForm(fmt.Sprintf("%s must be a whole number, or -1 for unlimited.", k.Label))
			break
		}
		set[k.Key] = n
	}
	if err == nil {
		_, err = s.up.do(r.Context(), "compute", sess.Token, http.MethodPut, s.ep.Compute+"/os-quota-sets/"+url.PathEscape(project),
			map[string]any{"quota_set": set}, nil)
	}
	s.adminResult(w, r, sess, "admin-quotas", "/admin/quotas?project="+url.QueryEscape(project), "quota-saved", err)
}

// ---- migrations ----

type migrationsData struct {
	Rows              []migrationRow
	Hosts, Statuses   []string
	Host, Status, Age string
	Total             int
	Ages              []struct{ Value, Label string }
}

// migrationAges are the age filter's choices.
var migrationAges = []struct{ Value, Label string }{{"", "any time"}, {"1h", "last hour"}, {"24h", "last day"}, {"168h", "last week"}}

// parseAPITime reads Nova's timestamps (with or without a zone).
func parseAPITime(s string) (time.Time, bool) {
	for _, l := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

func (s *Server) adminMigrationsPage(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	ms, err := s.migrations(ctx, sess)
	if err != nil {
		s.fail(w, r, sess, "Migrations", err)
		return
	}
	q := r.URL.Query()
	d := migrationsData{Host: q.Get("host"), Status: q.Get("status"), Age: q.Get("age"), Total: len(ms), Ages: migrationAges}
	age, _ := time.ParseDuration(d.Age)
	var body struct {
		Servers []AdminServer `json:"servers"`
	}
	sq := url.Values{"all_tenants": {"1"}, "limit": {"1000"}}
	_, _ = s.up.do(ctx, "compute", sess.Token, http.MethodGet, s.ep.Compute+"/servers/detail?"+sq.Encode(), nil, &body)
	srvName := names(body.Servers, func(a AdminServer) string { return a.ID }, func(a AdminServer) string { return a.Name })
	hosts, statuses := map[string]bool{}, map[string]bool{}
	sort.Slice(ms, func(i, j int) bool { return ms[i].UpdatedAt > ms[j].UpdatedAt })
	// Why a migration failed costs a call per server: the newest failures
	// get it.
	const maxExplained = 10
	explained := 0
	for _, m := range ms {
		for _, h := range []string{m.Source, m.Dest} {
			if h != "" {
				hosts[h] = true
			}
		}
		statuses[m.Status] = true
		if d.Host != "" && m.Source != d.Host && m.Dest != d.Host || d.Status != "" && m.Status != d.Status {
			continue
		}
		if age > 0 {
			t, ok := parseAPITime(cmpOr(m.UpdatedAt, m.CreatedAt))
			if !ok || time.Since(t) > age {
				continue
			}
		}
		row := migrationRow{Migration: m, Server: srvName[m.InstanceID]}
		if row.Failed() && explained < maxExplained {
			explained++
			row.Why = s.migrationFailure(ctx, sess, m.InstanceID)
		}
		d.Rows = append(d.Rows, row)
	}
	for h := range hosts {
		d.Hosts = append(d.Hosts, h)
	}
	for st := range statuses {
		d.Statuses = append(d.Statuses, st)
	}
	sort.Strings(d.Hosts)
	sort.Strings(d.Statuses)
	s.render(w, r, http.StatusOK, "admin", view{Title: "Migrations", Nav: "admin", Sess: sess, Data: adminView{Tab: "migrations", Data: d}})
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
