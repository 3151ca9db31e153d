package ovs

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Flow is one OpenFlow flow as ovs-ofctl dump-flows prints it (without
// statistics, ports by number).
type Flow struct {
	Cookie   uint64
	Table    int
	Priority int    // 32768 when the flow does not say
	Match    string // e.g. "arp,in_port=3,dl_src=..."
	Actions  string // e.g. "NORMAL", "drop"
}

func (f Flow) String() string {
	return fmt.Sprintf("cookie=%#x,table=%d,priority=%d,%s actions=%s", f.Cookie, f.Table, f.Priority, f.Match, f.Actions)
}

// FlowBatch is a list of flow changes to one bridge that ApplyFlows makes
// as one atomic OpenFlow bundle, in order, with one ovs-ofctl run: a boot's
// fallback, metadata and port-security flows cost one process, not four.
// The zero value is an empty batch.
type FlowBatch struct {
	lines []string
	err   error
}

// Add adds flows (ovs-ofctl flow syntax, one per element); a flow with the
// same match and priority as an existing one replaces it.
func (b *FlowBatch) Add(flows ...string) {
	for _, f := range flows {
		if err := oneLine(f); err != nil {
			b.err = errors.Join(b.err, fmt.Errorf("flow %q: %w", f, err))
			continue
		}
		b.lines = append(b.lines, "add "+f)
	}
}

// DeleteCookie deletes every flow whose cookie is exactly cookie.
func (b *FlowBatch) DeleteCookie(cookie uint64) {
	b.lines = append(b.lines, "delete "+CookieMatch(cookie))
}

// Replace deletes every flow with cookie and adds flows (which should
// carry it): within the bundle, so the rules change without a moment
// where none apply.
func (b *FlowBatch) Replace(cookie uint64, flows ...string) {
	b.DeleteCookie(cookie)
	b.Add(flows...)
}

// Added are the flows the batch adds, in order.
func (b *FlowBatch) Added() []string {
	var out []string
	for _, l := range b.lines {
		if f, ok := strings.CutPrefix(l, "add "); ok {
			out = append(out, f)
		}
	}
	return out
}

// Len is the number of changes in the batch.
func (b *FlowBatch) Len() int { return len(b.lines) }

// ApplyFlows makes batch's changes to bridge as one atomic bundle: all or
// none. An empty batch does nothing.
func (c *Client) ApplyFlows(ctx context.Context, bridge string, batch *FlowBatch) error {
	if batch.err != nil {
		return fmt.Errorf("ovs: flows for %s: %w", bridge, batch.err)
	}
	if len(batch.lines) == 0 {
		return nil
	}
	in := strings.Join(batch.lines, "\n") + "\n"
	if _, err := c.Ofctl(ctx, in, "--bundle", "add-flows", bridge, "-"); err != nil {
		return fmt.Errorf("ovs: %d flow changes on %s: %w", len(batch.lines), bridge, err)
	}
	return nil
}

// AddFlows adds flows (ovs-ofctl flow syntax, one per element) to bridge
// as one atomic OpenFlow bundle: all are added or none. A flow with the
// same match and priority as an existing one replaces it.
func (c *Client) AddFlows(ctx context.Context, bridge string, flows []string) error {
	var b FlowBatch
	b.Add(flows...)
	return c.ApplyFlows(ctx, bridge, &b)
}

// ReplaceFlows atomically (one bundle) deletes every flow of bridge whose
// cookie is cookie and adds flows, which should carry that cookie: a port's
// rules change without a moment where none apply.
func (c *Client) ReplaceFlows(ctx context.Context, bridge string, cookie uint64, flows []string) error {
	var b FlowBatch
	b.Replace(cookie, flows...)
	return c.ApplyFlows(ctx, bridge, &b)
}

// DeleteFlows deletes the flows of bridge that match (ovs-ofctl del-flows
// syntax, e.g. CookieMatch(c) or "in_port=3"). An empty match is refused:
// deleting every flow would also drop the NORMAL fallback.
func (c *Client) DeleteFlows(ctx context.Context, bridge, match string) error {
	if strings.TrimSpace(match) == "" {
		return fmt.Errorf("ovs: delete flows on %s: refusing an empty match (it would delete all flows)", bridge)
	}
	if _, err := c.Ofctl(ctx, "", "del-flows", bridge, match); err != nil {
		return fmt.Errorf("ovs: delete flows %q on %s: %w", match, bridge, err)
	}
	return nil
}

// DumpFlows returns the flows of bridge that match (all when empty).
func (c *Client) DumpFlows(ctx context.Context, bridge, match string) ([]Flow, error) {
	args := []string{"--no-names", "--no-stats", "dump-flows", bridge}
	if match != "" {
		args = append(args, match)
	}
	out, err := c.Ofctl(ctx, "", args...)
	if err != nil {
		return nil, fmt.Errorf("ovs: dump flows of %s: %w", bridge, err)
	}
	var flows []Flow
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if !strings.Contains(line, "actions=") {
			continue // reply header or blank
		}
		f, err := parseFlow(line)
		if err != nil {
			return nil, fmt.Errorf("ovs: dump flows of %s: %w", bridge, err)
		}
		flows = append(flows, f)
	}
	return flows, nil
}

// CookieMatch is the del-flows/dump-flows match for exactly cookie.
func CookieMatch(cookie uint64) string {
	return fmt.Sprintf("cookie=%#x/-1", cookie)
}

func oneLine(flow string) error {
	if strings.ContainsAny(flow, "\n\r") {
		return errors.New("flow spans several lines")
	}
	if strings.TrimSpace(flow) == "" {
		return errors.New("empty flow")
	}
	return nil
}

// parseFlow reads a dump-flows --no-stats line, e.g.
// "cookie=0x5, priority=100,arp,in_port=1 actions=NORMAL".
func parseFlow(line string) (Flow, error) {
	f := Flow{Priority: 32768}
	head, actions, ok := strings.Cut(line, "actions=")
	if !ok {
		return f, fmt.Errorf("no actions in flow %q", line)
	}
	f.Actions = strings.TrimSpace(actions)
	var match []string
	for _, field := range strings.FieldsFunc(head, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, _ := strings.Cut(field, "=")
		var err error
		switch k {
		case "cookie":
			f.Cookie, err = strconv.ParseUint(v, 0, 64)
		case "table":
			f.Table, err = strconv.Atoi(v)
		case "priority":
			f.Priority, err = strconv.Atoi(v)
		default:
			match = append(match, field)
		}
		if err != nil {
			return f, fmt.Errorf("flow %q: field %s: %w", line, field, err)
		}
	}
	f.Match = strings.Join(match, ",")
	return f, nil
}

// ParseFlow reads one flow as dump-flows --no-stats prints it or as
// add-flows takes it (cookie, table and priority apart, the rest of the
// match as written, the actions).
func ParseFlow(line string) (Flow, error) { return parseFlow(line) }
