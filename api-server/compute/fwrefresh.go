package compute

import (
	"context"
	"sync"
	"time"

	"github.com/capsule-cloud/capsule/api-server/httpapi"
	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/errdefs"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// fwBusyWait is how long a port whose server is busy (building, or in
// another task) stays waiting for its firewall refresh; past it the
// agent's drift repair is the backstop.
const fwBusyWait = 2 * time.Minute

// fwRefresher turns security group membership changes (a server created
// or deleted, an interface attached or detached) into flows-only
// firewall refreshes of the ports whose rules name the changed groups
// (protocol.KindRefreshFirewall, one-way, to the port's host). Marks
// are gathered for one window (Options.FirewallRefreshDelay) and each
// marked port gets one refresh per window however many changes named
// it: a burst of boots into one group refreshes each member once, not
// once per boot. A port whose server is busy (still building) gets none
// until the server is done (its build reads the members when it plugs;
// the refresh after it brings any joined since), re-checked every window
// for up to fwBusyWait; a stopped server's port gets none (its start
// plugs the current filter).
type fwRefresher struct {
	s     *Service
	delay time.Duration

	mu      sync.Mutex
	pending map[string]time.Time // port id -> when it was first marked
	timer   *time.Timer

	flushing sync.Mutex // one flush at a time, so a port's refreshes go out in order
}

func newFWRefresher(s *Service, delay time.Duration) *fwRefresher {
	return &fwRefresher{s: s, delay: delay, pending: map[string]time.Time{}}
}

// mark asks for a refresh of ports at the end of the current window.
func (r *fwRefresher) mark(ports []string) {
	if len(ports) == 0 {
		return
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range ports {
		if _, ok := r.pending[p]; !ok {
			r.pending[p] = now
		}
	}
	r.armLocked()
}

func (r *fwRefresher) armLocked() {
	if r.timer == nil && len(r.pending) > 0 {
		r.timer = time.AfterFunc(r.delay, func() { r.flush(context.Background()) })
	}
}

// flush sends the refreshes of every marked port and returns how many
// it sent; the ports of busy servers stay marked.
func (r *fwRefresher) flush(ctx context.Context) int {
	r.flushing.Lock()
	defer r.flushing.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = map[string]time.Time{}
	if r.timer != nil {
		r.timer.Stop()
		r.timer = nil
	}
	r.mu.Unlock()

	sent := 0
	busy := map[string]time.Time{}
	for port, since := range batch {
		ok, wait := r.s.refreshFirewall(ctx, port)
		if ok {
			sent++
		}
		if wait && time.Since(since) < fwBusyWait {
			busy[port] = since
		}
	}
	r.mu.Lock()
	for port, since := range busy {
		if _, ok := r.pending[port]; !ok {
			r.pending[port] = since
		}
	}
	r.armLocked()
	r.mu.Unlock()
	return sent
}

// refreshFirewall sends port's current filter to its server's host when
// the server is ACTIVE or PAUSED there (sent), and reports a server still
// building or busy with a task (wait).
func (s *Service) refreshFirewall(ctx context.Context, portID string) (sent, wait bool) {
	port, err := s.st.GetPort(ctx, portID)
	if err != nil {
		return false, false // deleted meanwhile: nothing plugged to filter
	}
	inst, err := s.pluggedServer(ctx, port)
	if errdefs.IsConflict(err) {
		// Worth waiting for only while it builds or runs a task; a server
		// in ERROR, rescued or resized gets its filter from its next plug.
		var st store.Instance
		if s.st.WithContext(ctx).Select("vm_state", "task_state").Where("id = ?", port.DeviceID).Take(&st).Error == nil &&
			(st.VMState == lifecycle.Building || st.TaskState != "") {
			return false, true
		}
		return false, false
	}
	if err != nil || inst == nil || (inst.VMState != lifecycle.Active && inst.VMState != lifecycle.Paused) {
		return false, false
	}
	nic, err := s.nicOf(ctx, inst, port.ID)
	if err != nil {
		s.log.Warn("firewall refresh: describe NIC (drift repair applies it)", "instance", inst.ID, "port", port.ID, "error", err)
		return false, false
	}
	msg, err := bus.NewMessage(protocol.KindRefreshFirewall, protocol.RefreshFirewall{RequestID: httpapi.NewRequestID(),
		InstanceID: inst.ID, NIC: nic, ComputedAt: time.Now().UTC()})
	if err == nil {
		err = s.bus.Publish(ctx, bus.ComputeQueue(inst.Host), msg)
	}
	if err != nil {
		s.log.Warn("firewall refresh: publish (drift repair applies it)", "instance", inst.ID, "port", port.ID,
			"host", inst.Host, "error", err)
		return false, false
	}
	return true, false
}
