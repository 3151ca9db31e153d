package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/services"
)

// mvServices is the microversion whose os-services ids are UUIDs, so a
// host is updated with PUT /os-services/{id}.
const mvServices = "2.53"

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

// hostEvacuate disables a host and cold-migrates its servers away; with
// --wait it confirms each migration once the server waits in
// VERIFY_RESIZE.
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
	if _, err := setHostEnabled(ctx, cc, host, false, "evacuating"); err != nil {
		return err
	}
	list, err := listServers(ctx, cc, servers.ListOpts{AllTenants: true, Host: host})
	if err != nil {
		return fmt.Errorf("list servers on %s: %w", host, err)
	}
	fmt.Fprintf(os.Stderr, "host %s disabled; migrating %d server(s) away\n", safe(host), len(list))
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
			evs[i] = evacuateOne(ctx, cc, &list[i], *wait, *timeout, say)
		}()
	}
	wg.Wait()
	if err := c.table(evacuationHeaders, evacuationRows(evs)); err != nil {
		return err
	}
	if n := failures(evs); n > 0 {
		return fmt.Errorf("%d of %d server(s) could not be migrated off %s (it stays disabled)", n, len(evs), host)
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
