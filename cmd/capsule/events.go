package main

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// hostEvent is one entry of GET /os-host-events (a Capsule extension).
type hostEvent struct {
	ID        string  `json:"id"`
	Host      string  `json:"host"`
	Instance  *string `json:"instance_uuid"`
	ProjectID string  `json:"project_id"`
	Kind      string  `json:"kind"`
	Severity  string  `json:"severity"`
	Message   string  `json:"message"`
	Value     float64 `json:"value"`
	Threshold float64 `json:"threshold"`
	CreatedAt string  `json:"created_at"`
}

// hostEvents lists the alarms and OOM kills agents raised, newest first:
//
//	capsule host events [HOST] [--server S] [--kind K] [--since DURATION] [--limit N]
func (c *cli) hostEvents(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("host events", flag.ContinueOnError)
	server := fs.String("server", "", "only the events of this server (id or name)")
	kind := fs.String("kind", "", "only events of this kind (oom_kill, pids_alarm, memory_alarm, cpu_alarm, host_pids_alarm, host_conntrack_alarm)")
	since := fs.Duration("since", 0, "only events of the last DURATION (e.g. 30m, 24h)")
	limit := fs.Int("limit", 0, "at most N events (the API's default is 100, its maximum 1000)")
	// HOST may come before or after the flags.
	var host string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		host, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch rest := fs.Args(); {
	case len(rest) == 1 && host == "":
		host = rest[0]
	case len(rest) > 0:
		return fmt.Errorf("usage: capsule host events [HOST] [--server S] [--kind K] [--since DURATION] [--limit N]")
	}
	cc, err := c.compute()
	if err != nil {
		return err
	}
	q := url.Values{}
	if host != "" {
		q.Set("host", host)
	}
	if *server != "" {
		s, err := findServer(ctx, cc, *server)
		if err != nil {
			return err
		}
		q.Set("instance_uuid", s.ID)
	}
	if *kind != "" {
		q.Set("kind", *kind)
	}
	if *since > 0 {
		q.Set("since", time.Now().Add(-*since).UTC().Format(time.RFC3339))
	}
	if *limit > 0 {
		q.Set("limit", strconv.Itoa(*limit))
	}
	u := cc.ServiceURL("os-host-events")
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var body struct {
		Events []hostEvent `json:"host_events"`
	}
	if _, err := cc.Get(ctx, u, &body, nil); err != nil {
		return fmt.Errorf("list host events: %w", err)
	}
	rows := [][]string{}
	for _, e := range body.Events {
		inst := "-"
		if e.Instance != nil {
			inst = *e.Instance
		}
		rows = append(rows, []string{e.CreatedAt, e.Host, inst, e.Kind, e.Severity,
			strconv.FormatFloat(e.Value, 'f', -1, 64), strconv.FormatFloat(e.Threshold, 'f', -1, 64), e.Message, e.ID})
	}
	return c.table([]string{"Time", "Host", "Server", "Kind", "Severity", "Value", "Threshold", "Message", "ID"}, rows)
}
