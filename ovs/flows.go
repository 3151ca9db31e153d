package ovs

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
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
//
// Group commit: a call that finds no ovs-ofctl of this Client running for
// bridge runs at once, alone (no timer, no waiting window). Calls that
// arrive while one runs queue up, and when it ends all queued batches go
// in ONE "ovs-ofctl --bundle add-flows" run, their lines concatenated in
// arrival order (FIFO per bridge: a later delete of a cookie never runs
// before an earlier add of it; bridges are independent). The combined
// bundle is atomic too, so if it fails nothing of it was applied: each
// queued batch is then run again alone, in order, so that each caller gets
// its own outcome and a bad batch does not fail the others'. A caller whose
// ctx ends while its batch is still queued is removed from the queue and
// gets ctx's error; once a run has taken the batch, the caller waits for
// that run's result (bounded by the Client's timeout per run).
func (c *Client) ApplyFlows(ctx context.Context, bridge string, batch *FlowBatch) error {
	if batch.err != nil {
		return fmt.Errorf("ovs: flows for %s: %w", bridge, batch.err)
	}
	if len(batch.lines) == 0 {
		return nil
	}
	c.mu.Lock()
	q := c.flowQueues[bridge]
	if q == nil {
		// Nothing running: run now, alone, with the caller's ctx.
		if c.flowQueues == nil {
			c.flowQueues = map[string]*flowQueue{}
		}
		c.flowQueues[bridge] = &flowQueue{}
		c.mu.Unlock()
		err := c.applyLines(ctx, bridge, batch.lines, 1)
		c.nextFlowRun(ctx, bridge)
		return err
	}
	req := &flowReq{lines: batch.lines, done: make(chan error, 1)}
	q.pending = append(q.pending, req)
	c.mu.Unlock()
	select {
	case err := <-req.done:
		return err
	case <-ctx.Done():
	}
	c.mu.Lock()
	if !req.taken {
		q.pending = slices.DeleteFunc(q.pending, func(r *flowReq) bool { return r == req })
		c.mu.Unlock()
		return fmt.Errorf("ovs: %d flow changes on %s: not applied: %w", len(batch.lines), bridge, ctx.Err())
	}
	c.mu.Unlock()
	return <-req.done
}

// flowQueue is a bridge's ApplyFlows state: it exists while a run for the
// bridge is under way, and pending are the batches that arrived meanwhile.
type flowQueue struct {
	pending []*flowReq
}

// flowReq is one queued ApplyFlows call; taken (under Client.mu) once a run
// has it, after which done receives its outcome.
type flowReq struct {
	lines []string
	taken bool
	done  chan error
}

// nextFlowRun is called when a run for bridge has ended: with nothing
// queued the bridge goes idle, else a goroutine runs what is queued (so
// that the caller who ran first does not wait for the others' batches).
func (c *Client) nextFlowRun(ctx context.Context, bridge string) {
	if reqs := c.takeFlowReqs(bridge); len(reqs) > 0 {
		go c.drainFlows(context.WithoutCancel(ctx), bridge, reqs)
	}
}

// takeFlowReqs takes every queued batch of bridge; with none it removes the
// bridge's queue (the bridge is idle: the next call runs at once).
func (c *Client) takeFlowReqs(bridge string) []*flowReq {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.flowQueues[bridge]
	if len(q.pending) == 0 {
		delete(c.flowQueues, bridge)
		return nil
	}
	reqs := q.pending
	q.pending = nil
	for _, r := range reqs {
		r.taken = true
	}
	return reqs
}

// drainFlows runs queued batches, merged, until the bridge's queue is empty.
// Its ctx carries no cancellation: the callers whose batches it took wait
// for it, each run bounded by the Client's timeout.
func (c *Client) drainFlows(ctx context.Context, bridge string, reqs []*flowReq) {
	for len(reqs) > 0 {
		c.applyMerged(ctx, bridge, reqs)
		reqs = c.takeFlowReqs(bridge)
	}
}

// applyMerged applies reqs in one bundle and tells each its outcome. When
// ovs-ofctl refuses the bundle (exits with an error status; the bundle is
// atomic, so nothing of it was applied), each batch runs again alone, in
// order, so that a bad batch fails only its own caller and the others'
// flows still go in. When the run was killed instead (its timeout), every
// caller gets that error: running each again could only multiply the wait.
func (c *Client) applyMerged(ctx context.Context, bridge string, reqs []*flowReq) {
	if len(reqs) > 1 {
		var lines []string
		for _, r := range reqs {
			lines = append(lines, r.lines...)
		}
		err := c.applyLines(ctx, bridge, lines, len(reqs))
		var ee *exec.ExitError
		if err == nil || !errors.As(err, &ee) || ee.ExitCode() <= 0 {
			for _, r := range reqs {
				r.done <- err
			}
			return
		}
	}
	for _, r := range reqs {
		r.done <- c.applyLines(ctx, bridge, r.lines, 1)
	}
}

// applyLines runs one "ovs-ofctl --bundle add-flows" with lines, the
// changes of batches callers' batches (its "ovs command" line says
// batches=N).
func (c *Client) applyLines(ctx context.Context, bridge string, lines []string, batches int) error {
	in := strings.Join(lines, "\n") + "\n"
	args := []string{c.timeoutArg(), "-O", c.ofVersion, "--bundle", "add-flows", bridge, "-"}
	if _, err := c.runLogged(ctx, in, []any{"batches", batches}, c.ofctl, args...); err != nil {
		return fmt.Errorf("ovs: %d flow changes on %s: %w", len(lines), bridge, err)
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
