package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/migrations"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/pagination"
)

// Microversions the migration commands need (the Compute API serves up to
// 2.96): a named target host is 2.56, os-server-migrations 2.23, the
// migrations' uuid 2.59, instance-action events 2.51.
const (
	mvMigrateHost = "2.56"
	mvMigrations  = "2.59"
	mvEvents      = "2.51"
)

// pollEvery is how often --wait looks at a migrating server.
const pollEvery = 2 * time.Second

// atVersion returns a copy of cc that sends microversion v.
func atVersion(cc *gophercloud.ServiceClient, v string) *gophercloud.ServiceClient {
	c := *cc
	c.Microversion = v
	return &c
}

// parseInterspersed parses flags wherever they stand among the positional
// arguments ("server migrate SERVER --host H"), which flag.Parse does not.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// UnmarshalJSON fills serverExt's own fields too: servers.Server's
// UnmarshalJSON, promoted through the embedding, would otherwise decode
// the embedded Server alone and leave Host empty.
func (s *serverExt) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, &s.Server); err != nil {
		return err
	}
	var ext struct {
		Host *string `json:"OS-EXT-SRV-ATTR:host"`
	}
	if err := json.Unmarshal(b, &ext); err != nil {
		return err
	}
	s.Host = ""
	if ext.Host != nil {
		s.Host = *ext.Host
	}
	return nil
}

// extractServers decodes a servers list page with serverExt's own
// decoder: gophercloud's ExtractServersInto fills only embedded structs
// of a slice's elements, so Host would stay empty.
func extractServers(p pagination.Page) ([]serverExt, error) {
	sp, ok := p.(servers.ServerPage)
	if !ok {
		return nil, fmt.Errorf("unexpected page type %T", p)
	}
	b, err := json.Marshal(sp.Body)
	if err != nil {
		return nil, err
	}
	var body struct {
		Servers []serverExt `json:"servers"`
	}
	if err := json.Unmarshal(b, &body); err != nil {
		return nil, fmt.Errorf("decode servers: %w", err)
	}
	return body.Servers, nil
}

// listServers lists every page of servers matching opts.
func listServers(ctx context.Context, cc *gophercloud.ServiceClient, opts servers.ListOpts) ([]serverExt, error) {
	var all []serverExt
	err := servers.List(cc, opts).EachPage(ctx, func(_ context.Context, p pagination.Page) (bool, error) {
		list, err := extractServers(p)
		all = append(all, list...)
		return err == nil, err
	})
	return all, err
}

// findServerAnyProject finds a server by id, or by unique name across
// every project (admin commands act on any project's servers).
func findServerAnyProject(ctx context.Context, cc *gophercloud.ServiceClient, ref string) (*serverExt, error) {
	var s serverExt
	if err := servers.Get(ctx, cc, ref).ExtractInto(&s); err == nil {
		return &s, nil
	} else if !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return nil, fmt.Errorf("get server %s: %w", ref, err)
	}
	list, err := listServers(ctx, cc, servers.ListOpts{Name: "^" + ref + "$", AllTenants: true})
	if err != nil {
		return nil, fmt.Errorf("find server %s: %w", ref, err)
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("no server named or with id %q", ref)
	case 1:
		return &list[0], nil
	}
	return nil, fmt.Errorf("%d servers are named %q; use the id", len(list), ref)
}

// migrateBody is the migrate action's body: null lets the scheduler
// choose, a host needs microversion 2.56.
func migrateBody(host string) map[string]any {
	if host == "" {
		return map[string]any{"migrate": nil}
	}
	return map[string]any{"migrate": map[string]any{"host": host}}
}

// postMigrate starts a cold migration of server id and returns the
// request id, under which the API records the action.
func postMigrate(ctx context.Context, cc *gophercloud.ServiceClient, id, host string) (string, error) {
	c := cc
	if host != "" {
		c = atVersion(cc, mvMigrateHost)
	}
	resp, err := c.Post(ctx, c.ServiceURL("servers", id, "action"), migrateBody(host), nil,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusAccepted}})
	if err != nil {
		return "", fmt.Errorf("migrate %s: %w", id, err)
	}
	return requestIDOf(resp), nil
}

func requestIDOf(resp *http.Response) string {
	if resp == nil {
		return ""
	}
	if id := resp.Header.Get("X-Compute-Request-Id"); id != "" {
		return id
	}
	return resp.Header.Get("X-Openstack-Request-Id")
}

func (c *cli) serverMigrate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server migrate", flag.ContinueOnError)
	host := fs.String("host", "", "target host (default: the scheduler's choice)")
	wait := fs.Bool("wait", false, "show progress until the server waits in VERIFY_RESIZE")
	timeout := fs.Duration("timeout", time.Hour, "how long --wait waits")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: capsule server migrate SERVER [--host H] [--wait]")
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	s, err := findServerAnyProject(ctx, cc, pos[0])
	if err != nil {
		return err
	}
	reqID, err := postMigrate(ctx, cc, s.ID, *host)
	if err != nil {
		return err
	}
	if !*wait {
		return c.record([]string{"server", "from", "status", "request_id"},
			map[string]any{"server": s.ID, "from": s.Host, "status": "migrating", "request_id": reqID})
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := waitMigration(ctx, cc, s.ID, reqID, goalVerify, newProgress(os.Stderr))
	if err != nil {
		return err
	}
	if c.format == "table" {
		fmt.Fprintf(os.Stderr, "migrated to %s; confirm with: capsule server resize %s --confirm\n", st.Host, pos[0])
	}
	return c.record([]string{"server", "from", "to", "status"},
		map[string]any{"server": s.ID, "from": s.Host, "to": st.Host, "status": st.Status})
}

func (c *cli) serverResize(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server resize", flag.ContinueOnError)
	confirm := fs.Bool("confirm", false, "keep the resized (or migrated) server")
	revert := fs.Bool("revert", false, "go back to the old flavor (and host)")
	wait := fs.Bool("wait", false, "wait until the resize (or its confirm/revert) is done")
	timeout := fs.Duration("timeout", time.Hour, "how long --wait waits")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	const use = "usage: capsule server resize SERVER FLAVOR [--wait] | capsule server resize SERVER --confirm|--revert [--wait]"
	switch {
	case *confirm && *revert:
		return errors.New("--confirm and --revert exclude each other")
	case (*confirm || *revert) && len(pos) != 1, !*confirm && !*revert && len(pos) != 2:
		return errors.New(use)
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	// The caller's own servers first; an admin may name any project's.
	s, err := findServer(ctx, cc, pos[0])
	if err != nil {
		if s, err = findServerAnyProject(ctx, cc, pos[0]); err != nil {
			return err
		}
	}
	var res interface {
		ExtractErr() error
	}
	goal, verb := goalVerify, "resize"
	switch {
	case *confirm:
		r := servers.ConfirmResize(ctx, cc, s.ID)
		res, goal, verb = r, goalSettled, "confirm"
	case *revert:
		r := servers.RevertResize(ctx, cc, s.ID)
		res, goal, verb = r, goalSettled, "revert"
	default:
		f, err := findFlavor(ctx, cc, pos[1])
		if err != nil {
			return err
		}
		res = servers.Resize(ctx, cc, s.ID, servers.ResizeOpts{FlavorRef: f.ID})
	}
	if err := res.ExtractErr(); err != nil {
		return fmt.Errorf("%s %s: %w", verb, pos[0], err)
	}
	if !*wait {
		return c.record([]string{"server", "action", "status"}, map[string]any{"server": s.ID, "action": verb, "status": "accepted"})
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	st, err := waitMigration(ctx, cc, s.ID, "", goal, newProgress(os.Stderr))
	if err != nil {
		return err
	}
	if goal == goalVerify && c.format == "table" {
		fmt.Fprintf(os.Stderr, "resized on %s; confirm with: capsule server resize %s --confirm\n", st.Host, pos[0])
	}
	return c.record([]string{"server", "action", "status", "host", "flavor"},
		map[string]any{"server": s.ID, "action": verb, "status": st.Status, "host": st.Host, "flavor": st.Flavor})
}

// serverMigration is one entry of GET /servers/{id}/migrations.
type serverMigration struct {
	ID            int64  `json:"id"`
	Status        string `json:"status"`
	SourceCompute string `json:"source_compute"`
	DestCompute   string `json:"dest_compute"`
	DiskTotal     int64  `json:"disk_total_bytes"`
	DiskProcessed int64  `json:"disk_processed_bytes"`
}

// serverState is what --wait sees of a migrating server on one poll.
type serverState struct {
	Status string
	Task   string
	Host   string
	Flavor string
	Fault  string
	Mig    *serverMigration // the newest migration in progress, if any
}

// waitGoal is what --wait waits for.
type waitGoal int

const (
	goalVerify  waitGoal = iota // a migration or resize: VERIFY_RESIZE
	goalSettled                 // a confirm or revert: ACTIVE or SHUTOFF, no task
)

// verdict says whether st ends the wait: done, or failed (the caller
// then looks for why), or neither.
func verdict(goal waitGoal, st serverState) (done, failed bool) {
	switch st.Status {
	case "ERROR":
		return false, true
	case "VERIFY_RESIZE":
		return goal == goalVerify, false
	case "ACTIVE", "SHUTOFF":
		if st.Task != "" {
			return false, false
		}
		// The API shows RESIZE before it answers a migrate or resize, so
		// a server back at rest before VERIFY_RESIZE was rolled back.
		return goal == goalSettled, goal == goalVerify
	}
	return false, false
}

// phase names a migration status for people: the push and pull steps
// are what takes time.
func phase(status string) string {
	switch status {
	case "pre-migrating":
		return "pre-migrating (scheduling)"
	case "migrating":
		return "migrating (push)"
	case "post-migrating":
		return "post-migrating (pull)"
	}
	return status
}

// humanBytes prints n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// progressLine is the one line --wait shows for st.
func progressLine(st serverState) string {
	var b strings.Builder
	b.WriteString(st.Status)
	if st.Task != "" {
		b.WriteString(" (" + st.Task + ")")
	}
	if m := st.Mig; m != nil {
		fmt.Fprintf(&b, "  %s", phase(m.Status))
		if m.SourceCompute != "" || m.DestCompute != "" {
			dest := m.DestCompute
			if dest == "" {
				dest = "?"
			}
			fmt.Fprintf(&b, "  %s → %s", m.SourceCompute, dest)
		}
		verb := ""
		switch m.Status {
		case "migrating":
			verb = "pushed"
		case "post-migrating":
			verb = "pulled"
		}
		if verb != "" && (m.DiskProcessed > 0 || m.DiskTotal > 0) {
			fmt.Fprintf(&b, "  %s %s", verb, humanBytes(m.DiskProcessed))
			if m.DiskTotal > 0 && m.DiskTotal >= m.DiskProcessed {
				fmt.Fprintf(&b, " of %s (%d%%)", humanBytes(m.DiskTotal), m.DiskProcessed*100/m.DiskTotal)
			}
		}
	}
	return b.String()
}

// progress shows a changing status line: redrawn in place on a terminal,
// one line per change otherwise (logs, pipes).
type progress struct {
	w    io.Writer
	tty  bool
	last string
}

func newProgress(f *os.File) *progress {
	fi, err := f.Stat()
	return &progress{w: f, tty: err == nil && fi.Mode()&os.ModeCharDevice != 0}
}

func (p *progress) show(line string) {
	line = safe(line) // host names and statuses come from the API
	if p == nil || line == p.last {
		return
	}
	p.last = line
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K"+line)
		return
	}
	fmt.Fprintln(p.w, line)
}

// end finishes a redrawn line.
func (p *progress) end() {
	if p != nil && p.tty && p.last != "" {
		fmt.Fprintln(p.w)
	}
}

// pollServer reads the server and its migration in progress.
func pollServer(ctx context.Context, cc *gophercloud.ServiceClient, id string) (serverState, error) {
	var s serverExt
	if err := servers.Get(ctx, cc, id).ExtractInto(&s); err != nil {
		return serverState{}, fmt.Errorf("get server %s: %w", id, err)
	}
	st := serverState{Status: s.Status, Task: s.TaskState, Host: s.Host, Fault: s.Fault.Message, Flavor: fmt.Sprint(s.Flavor["id"])}
	var body struct {
		Migrations []serverMigration `json:"migrations"`
	}
	// Members may not read migrations (an admin API): their progress is
	// the status alone; any other error is retried at the next poll.
	mc := atVersion(cc, mvMigrations)
	if _, err := mc.Get(ctx, mc.ServiceURL("servers", id, "migrations"), &body, nil); err == nil && len(body.Migrations) > 0 {
		st.Mig = &body.Migrations[0]
	}
	return st, nil
}

// waitMigration polls server id until goal, showing progress on p. reqID
// (if known) is the request whose failure is explained from its action's
// events.
func waitMigration(ctx context.Context, cc *gophercloud.ServiceClient, id, reqID string, goal waitGoal, p *progress) (serverState, error) {
	defer p.end()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		st, err := pollServer(ctx, cc, id)
		if err != nil && ctx.Err() != nil {
			return st, fmt.Errorf("wait for %s: %w", id, ctx.Err())
		}
		if err == nil {
			p.show(progressLine(st))
			done, failed := verdict(goal, st)
			if done {
				return st, nil
			}
			if failed {
				return st, fmt.Errorf("server %s: %s", id, failureReason(ctx, cc, id, reqID, st))
			}
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("wait for %s (last seen %s): %w", id, st.Status, ctx.Err())
		case <-tick.C:
		}
	}
}

// failureReason explains a failed migration: the server's fault when it
// is in ERROR, else the failed events of the request's action (the
// migration's error is recorded there), else the migration's status.
func failureReason(ctx context.Context, cc *gophercloud.ServiceClient, id, reqID string, st serverState) string {
	if st.Status == "ERROR" && st.Fault != "" {
		return "ERROR: " + st.Fault
	}
	var why []string
	if reqID != "" {
		if a, err := instanceactions.Get(ctx, atVersion(cc, mvEvents), id, reqID).Extract(); err == nil {
			if a.Message != "" {
				why = append(why, a.Message)
			}
			if a.Events != nil {
				for _, e := range *a.Events {
					if strings.EqualFold(e.Result, "error") {
						msg := e.Event
						if tb := strings.TrimSpace(e.Traceback); tb != "" {
							msg += ": " + tb
						}
						why = append(why, msg)
					}
				}
			}
		}
	}
	if last := lastMigration(ctx, cc, id); last != nil {
		why = append(why, fmt.Sprintf("migration %d is %s", last.ID, last.Status))
	}
	if len(why) == 0 {
		return fmt.Sprintf("the migration did not complete (server is %s)", st.Status)
	}
	return fmt.Sprintf("the migration failed (server is %s): %s", st.Status, strings.Join(why, "; "))
}

// lastMigration is the server's newest migration, whatever its status.
func lastMigration(ctx context.Context, cc *gophercloud.ServiceClient, id string) *migrations.Migration {
	pages, err := migrations.List(atVersion(cc, mvMigrations), migrations.ListOpts{InstanceID: &id}).AllPages(ctx)
	if err != nil {
		return nil
	}
	ms, err := migrations.ExtractMigrations(pages)
	if err != nil || len(ms) == 0 {
		return nil
	}
	return &ms[0]
}

func (c *cli) migrationList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("migration list", flag.ContinueOnError)
	host := fs.String("host", "", "migrations from or to this host")
	server := fs.String("server", "", "migrations of this server (id or name)")
	status := fs.String("status", "", "migrations in this status (e.g. migrating, finished, error)")
	if _, err := parseInterspersed(fs, args); err != nil {
		return err
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	opts := migrations.ListOpts{}
	if *host != "" {
		opts.Host = host
	}
	if *status != "" {
		opts.Status = status
	}
	if *server != "" {
		id := *server
		if s, err := findServerAnyProject(ctx, cc, *server); err == nil {
			id = s.ID
		} else if !looksLikeUUID(*server) {
			// A deleted server's id still lists its migrations; a name
			// must resolve.
			return err
		}
		opts.InstanceID = &id
	}
	pages, err := migrations.List(atVersion(cc, mvMigrations), opts).AllPages(ctx)
	if err != nil {
		return fmt.Errorf("list migrations: %w", err)
	}
	ms, err := migrations.ExtractMigrations(pages)
	if err != nil {
		return err
	}
	return c.table(migrationHeaders, migrationRows(ms))
}

var migrationHeaders = []string{"ID", "UUID", "Server", "Type", "Status", "Source", "Dest", "Created", "Updated"}

func migrationRows(ms []migrations.Migration) [][]string {
	rows := make([][]string, 0, len(ms))
	for _, m := range ms {
		rows = append(rows, []string{fmt.Sprint(m.ID), m.UUID, m.InstanceID, m.MigrationType, m.Status,
			m.SourceCompute, m.DestCompute, m.CreatedAt.UTC().Format(time.RFC3339), m.UpdatedAt.UTC().Format(time.RFC3339)})
	}
	return rows
}

// looksLikeUUID reports whether s has a UUID's shape.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
