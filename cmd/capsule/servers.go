package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/hypervisors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/instanceactions"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
)

// serverExt adds the admin fields gophercloud's Server leaves out.
type serverExt struct {
	servers.Server
	Host string `json:"OS-EXT-SRV-ATTR:host"`
}

func (c *cli) serverList(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server list", flag.ContinueOnError)
	all := fs.Bool("all-projects", false, "servers of every project (admin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	list, err := listServers(ctx, cc, servers.ListOpts{AllTenants: *all})
	if err != nil {
		return fmt.Errorf("list servers: %w", err)
	}
	rows := [][]string{}
	for _, s := range list {
		rows = append(rows, []string{s.ID, s.Name, s.Status, fmt.Sprint(s.TaskState), s.Host, fmt.Sprint(s.Flavor["id"])})
	}
	return c.table([]string{"ID", "Name", "Status", "Task", "Host", "Flavor"}, rows)
}

// findServer accepts an id or a unique name.
func findServer(ctx context.Context, cc *gophercloud.ServiceClient, ref string) (*serverExt, error) {
	var s serverExt
	if err := servers.Get(ctx, cc, ref).ExtractInto(&s); err == nil {
		return &s, nil
	} else if !gophercloud.ResponseCodeIs(err, 404) {
		return nil, err
	}
	list, err := listServers(ctx, cc, servers.ListOpts{Name: "^" + ref + "$"})
	if err != nil {
		return nil, err
	}
	switch len(list) {
	case 0:
		return nil, fmt.Errorf("no server named or with id %q", ref)
	case 1:
		return &list[0], nil
	}
	return nil, fmt.Errorf("%d servers are named %q; use the id", len(list), ref)
}

func (c *cli) serverShow(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: capsule server show SERVER")
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	s, err := findServer(ctx, cc, args[0])
	if err != nil {
		return err
	}
	v := map[string]any{"id": s.ID, "name": s.Name, "status": s.Status, "task_state": s.TaskState,
		"power_state": s.PowerState.String(), "host": s.Host, "flavor": s.Flavor["id"], "image": s.Image["id"],
		"project": s.TenantID, "created": s.Created, "fault": s.Fault.Message, "last_failure": lastFailure(ctx, cc, s)}
	return c.record([]string{"id", "name", "status", "task_state", "power_state", "host", "flavor", "image", "project", "created", "fault", "last_failure"}, v)
}

// lastFailure says why the server's latest failed action failed: its
// fault when it is in ERROR (Nova shows none otherwise), else the failed
// events of its newest failed action (an ACTIVE server whose resize or
// reboot failed keeps running; the events' tracebacks, which the
// operator as an admin sees, say why). "" when nothing failed.
func lastFailure(ctx context.Context, cc *gophercloud.ServiceClient, s *serverExt) string {
	if s.Status == "ERROR" && s.Fault.Message != "" {
		return s.Fault.Message
	}
	pages, err := instanceactions.List(atVersion(cc, mvEvents), s.ID, nil).AllPages(ctx)
	if err != nil {
		return ""
	}
	acts, err := instanceactions.ExtractInstanceActions(pages)
	if err != nil {
		return ""
	}
	for _, a := range acts { // newest first
		if !strings.EqualFold(a.Message, "error") {
			continue
		}
		why := []string{}
		if full, err := instanceactions.Get(ctx, atVersion(cc, mvEvents), s.ID, a.RequestID).Extract(); err == nil && full.Events != nil {
			for _, e := range *full.Events {
				if strings.EqualFold(e.Result, "error") {
					msg := e.Event
					if tb := strings.TrimSpace(e.Traceback); tb != "" {
						msg += ": " + tb
					}
					why = append(why, msg)
				}
			}
		}
		head := fmt.Sprintf("%s (%s, %s) failed", a.Action, a.RequestID, a.StartTime.UTC().Format(time.RFC3339))
		if len(why) == 0 {
			return head
		}
		return head + ": " + strings.Join(why, "; ")
	}
	return ""
}

func (c *cli) hostList(ctx context.Context) error {
	cc, err := c.compute()
	if err != nil {
		return err
	}
	spages, err := services.List(cc, services.ListOpts{Binary: "nova-compute"}).AllPages(ctx)
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	svcs, err := services.ExtractServices(spages)
	if err != nil {
		return err
	}
	hpages, err := hypervisors.List(cc, nil).AllPages(ctx)
	if err != nil {
		return fmt.Errorf("list hypervisors: %w", err)
	}
	hvs, err := hypervisors.ExtractHypervisors(hpages)
	if err != nil {
		return err
	}
	byHost := map[string]hypervisors.Hypervisor{}
	for _, h := range hvs {
		byHost[h.HypervisorHostname] = h
	}
	rows := [][]string{}
	for _, s := range svcs {
		h := byHost[s.Host]
		rows = append(rows, []string{s.Host, s.Zone, s.Status, s.State,
			fmt.Sprintf("%d/%d", h.VCPUsUsed, h.VCPUs), fmt.Sprintf("%d/%d", h.MemoryMBUsed, h.MemoryMB),
			strconv.Itoa(h.RunningVMs), s.DisabledReason})
	}
	return c.table([]string{"Host", "Zone", "Status", "State", "vCPUs used/physical", "RAM MB used/total", "Servers", "Disabled reason"}, rows)
}
