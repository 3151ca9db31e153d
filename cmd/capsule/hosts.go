package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
)

// mvServices is the microversion whose os-services ids are UUIDs, so a
// host is updated with PUT /os-services/{id}.
const (
	mvServices = "2.53"
	// mvEvacuate: evacuate without onSharedStorage, answered with no body.
	mvEvacuate = "2.14"
)

// computeService finds host's nova-compute service.
func computeService(ctx context.Context, cc *gophercloud.ServiceClient, host string) (*services.Service, error) {
	pages, err := services.List(cc, services.ListOpts{Binary: "nova-compute", Host: host}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list services of %s: %w", host, err)
	}
	svcs, err := services.ExtractServices(pages)
	if err != nil {
		return nil, err
	}
	for i := range svcs {
		if svcs[i].Host == host {
			return &svcs[i], nil
		}
	}
	return nil, fmt.Errorf("no compute host %q (see capsule host list)", host)
}

// setHostEnabled enables or disables host's compute service; a disabled
// host gets no new servers from the scheduler.
func setHostEnabled(ctx context.Context, cc *gophercloud.ServiceClient, host string, enable bool, reason string) (*services.Service, error) {
	sc := atVersion(cc, mvServices)
	svc, err := computeService(ctx, sc, host)
	if err != nil {
		return nil, err
	}
	opts := services.UpdateOpts{Status: services.ServiceEnabled}
	if !enable {
		opts = services.UpdateOpts{Status: services.ServiceDisabled, DisabledReason: reason}
	}
	out, err := services.Update(ctx, sc, svc.ID, opts).Extract()
	if err != nil {
		return nil, fmt.Errorf("update service of %s: %w", host, err)
	}
	return out, nil
}

func (c *cli) hostDisable(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("host disable", flag.ContinueOnError)
	reason := fs.String("reason", "", "why (shown in host list)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return errors.New("usage: capsule host disable HOST [--reason R]")
	}
	return c.setHost(ctx, pos[0], false, *reason)
}

func (c *cli) hostEnable(ctx context.Context, args []string) error {
	if len(args) != 1 {
		return errors.New("usage: capsule host enable HOST")
	}
	return c.setHost(ctx, args[0], true, "")
}

func (c *cli) setHost(ctx context.Context, host string, enable bool, reason string) error {
	cc, err := c.compute()
	if err != nil {
		return err
	}
	svc, err := setHostEnabled(ctx, cc, host, enable, reason)
	if err != nil {
		return err
	}
	return c.record([]string{"host", "status", "state", "disabled_reason"},
		map[string]any{"host": svc.Host, "status": svc.Status, "state": svc.State, "disabled_reason": svc.DisabledReason})
}

// evacuation is the outcome for one server of a host evacuation.
type evacuation struct {
	ID, Name, From, To, Result string
	Failed                     bool
}

var evacuationHeaders = []string{"Server", "Name", "From", "To", "Result"}

func evacuationRows(evs []evacuation) [][]string {
	rows := make([][]string, 0, len(evs))
	for _, e := range evs {
		rows = append(rows, []string{e.ID, e.Name, e.From, e.To, e.Result})
	}
	return rows
}

// failures counts the evacuations that failed.
func failures(evs []evacuation) int {
	n := 0
	for _, e := range evs {
		if e.Failed {
			n++
		}
	}
	return n
}

// hostEvacuate disables a host and moves its servers away: a host that
// is up has them cold-migrated (with --wait each migration is confirmed
// once the server waits in VERIFY_RESIZE); a host that is down (or
// forced down) has them evacuated (Nova's evacuate: rebuilt on another
// host from their images, with their addresses and shared volumes; with
// --wait until each runs there).
func (c *cli) hostEvacuate(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("host evacuate", flag.ContinueOnError)
	wait := fs.Bool("wait", false, "wait for each migration and confirm it")
	parallel := fs.Int("parallel", 1, "servers migrated at a time (each one commits, pushes and pulls its disk)")
	timeout := fs.Duration("timeout", time.Hour, "how long --wait waits for each server")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *parallel < 1 {
		return errors.New("usage: capsule host evacuate HOST [--wait] [--parallel N]")
	}
	host := pos[0]
	cc, err := c.compute()
	if err != nil {
		return err
	}
	svc, err := setHostEnabled(ctx, cc, host, false, "evacuating")
	if err != nil {
		return err
	}
	dead := svc.State == "down"
	list, err := listServers(ctx, cc, servers.ListOpts{AllTenants: true, Host: host})
	if err != nil {
		return fmt.Errorf("list servers on %s: %w", host, err)
	}
	if dead {
		fmt.Fprintf(os.Stderr, "host %s is down and disabled; evacuating %d server(s): each is rebuilt on another host from its image\n",
			safe(host), len(list))
	} else {
		fmt.Fprintf(os.Stderr, "host %s disabled; migrating %d server(s) away\n", safe(host), len(list))
	}
	evs := make([]evacuation, len(list))
	var mu sync.Mutex // serialises the progress lines
	say := func(format string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(os.Stderr, safe(fmt.Sprintf(format, a...)))
	}
	sem := make(chan struct{}, *parallel)
	var wg sync.WaitGroup
	for i := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if dead {
				evs[i] = rebuildElsewhere(ctx, cc, &list[i], *wait, *timeout, say)
			} else {
				evs[i] = evacuateOne(ctx, cc, &list[i], *wait, *timeout, say)
			}
		}()
	}
	wg.Wait()
	if err := c.table(evacuationHeaders, evacuationRows(evs)); err != nil {
		return err
	}
	if n := failures(evs); n > 0 {
		verb := "migrated"
		if dead {
			verb = "evacuated"
		}
		return fmt.Errorf("%d of %d server(s) could not be %s off %s (it stays disabled)", n, len(evs), verb, host)
	}
	return nil
}

// evacuateOne migrates one server; with wait, until it is confirmed on
// its new host.
func evacuateOne(ctx context.Context, cc *gophercloud.ServiceClient, s *serverExt, wait bool, timeout time.Duration,
	say func(string, ...any)) evacuation {
	ev := evacuation{ID: s.ID, Name: s.Name, From: s.Host}
	fail := func(err error) evacuation {
		say("%s (%s): %v", s.Name, s.ID, err)
		ev.Result, ev.Failed = "failed: "+err.Error(), true
		return ev
	}
	reqID, err := postMigrate(ctx, cc, s.ID, "")
	if err != nil {
		return fail(err)
	}
	say("%s (%s): migration started", s.Name, s.ID)
	if !wait {
		ev.Result = "migrating"
		return ev
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := waitMigration(ctx, cc, s.ID, reqID, goalVerify, nil)
	if err != nil {
		return fail(err)
	}
	ev.To = st.Host
	if err := servers.ConfirmResize(ctx, cc, s.ID).ExtractErr(); err != nil {
		return fail(fmt.Errorf("confirm: %w", err))
	}
	st, err = waitMigration(ctx, cc, s.ID, "", goalSettled, nil)
	if err != nil {
		return fail(fmt.Errorf("confirm: %w", err))
	}
	ev.To, ev.Result = st.Host, "migrated ("+st.Status+")"
	say("%s (%s): on %s, confirmed", s.Name, s.ID, st.Host)
	return ev
}

// rebuildElsewhere evacuates one server of a dead host (Nova's evacuate,
// 2.14: the scheduler picks the host); with wait, until it settles
// (ACTIVE or SHUTOFF) on another host.
func rebuildElsewhere(ctx context.Context, cc *gophercloud.ServiceClient, s *serverExt, wait bool, timeout time.Duration,
	say func(string, ...any)) evacuation {
	ev := evacuation{ID: s.ID, Name: s.Name, From: s.Host}
	fail := func(err error) evacuation {
		say("%s (%s): %v", s.Name, s.ID, err)
		ev.Result, ev.Failed = "failed: "+err.Error(), true
		return ev
	}
	c := atVersion(cc, mvEvacuate)
	if _, err := c.Post(ctx, c.ServiceURL("servers", s.ID, "action"), map[string]any{"evacuate": map[string]any{}}, nil,
		&gophercloud.RequestOpts{OkCodes: []int{http.StatusOK}}); err != nil {
		return fail(fmt.Errorf("evacuate: %w", err))
	}
	say("%s (%s): evacuation started", s.Name, s.ID)
	if !wait {
		ev.Result = "evacuating"
		return ev
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	st, err := waitMigration(ctx, cc, s.ID, "", goalSettled, nil)
	if err != nil {
		return fail(err)
	}
	ev.To = st.Host
	if st.Host == s.Host {
		return fail(errors.New("no host took it: it is still on its dead host (see its fault)"))
	}
	ev.Result = "evacuated (" + st.Status + ")"
	say("%s (%s): rebuilt on %s", s.Name, s.ID, st.Host)
	return ev
}
