package conductor

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/internal/storetest"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// testNow is the conductor's clock in the tests.
var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newTestConductor returns a conductor on st and b whose clock reads
// testNow.
func newTestConductor(st *store.Store, b bus.Bus, maxAttempts int) *Conductor {
	c := New(st, b, config.Conductor{}, maxAttempts, quietLog())
	c.now = func() time.Time { return testNow }
	return c
}

// addHost registers a compute host (4 vCPU, 4096 MB, 40 GB).
func addHost(t *testing.T, st *store.Store, host string) {
	t.Helper()
	hb := testNow.Add(-5 * time.Second)
	svc := store.Service{UUID: "svc-" + host, Host: host, Binary: store.ComputeBinary, Zone: "nova",
		LastHeartbeat: &hb, VCPUs: 4, MemoryMB: 4096, DiskGB: 40,
		CPUAllocationRatio: 1, RAMAllocationRatio: 1, DiskAllocationRatio: 1}
	if err := st.DB.Create(&svc).Error; err != nil {
		t.Fatalf("add host %s: %v", host, err)
	}
}

// instOpt adjusts an instance before it is stored.
type instOpt func(*store.Instance)

func state(vm lifecycle.VMState, task lifecycle.TaskState) instOpt {
	return func(i *store.Instance) { i.VMState, i.TaskState = vm, task }
}
func onHost(h string) instOpt { return func(i *store.Instance) { i.Host = h } }
func power(ps lifecycle.PowerState) instOpt {
	return func(i *store.Instance) { i.PowerState = int(ps) }
}
func attempts(n int) instOpt         { return func(i *store.Instance) { i.BuildAttempts = n } }
func tried(hosts string) instOpt     { return func(i *store.Instance) { i.TriedHosts = hosts } }
func createdAt(at time.Time) instOpt { return func(i *store.Instance) { i.CreatedAt = at } }
func deletedAt(at time.Time) instOpt {
	return func(i *store.Instance) { i.DeletedAt = &at; i.VMState = lifecycle.Deleted; i.TaskState = "" }
}

// addInstance stores an instance (default: building/spawning on no host,
// 1 vCPU/512 MB/1 GB, created a minute before testNow) and returns it.
func addInstance(t *testing.T, st *store.Store, opts ...instOpt) store.Instance {
	t.Helper()
	inst := store.Instance{ID: uuid.NewString(), Name: "vm", ProjectID: "p1", UserID: "u1",
		FlavorID: "f1", FlavorName: "m1.tiny", VCPUs: 1, MemoryMB: 512, RootGB: 1,
		VMState: lifecycle.Building, TaskState: lifecycle.Spawning, BuildAttempts: 1,
		Hostname: "vm", CreatedAt: testNow.Add(-time.Minute), UpdatedAt: testNow.Add(-time.Minute)}
	for _, o := range opts {
		o(&inst)
	}
	if err := st.DB.Create(&inst).Error; err != nil {
		t.Fatalf("add instance: %v", err)
	}
	return inst
}

// addClaim reserves 1 vCPU/512 MB/1 GB on host for id.
func addClaim(t *testing.T, st *store.Store, id, host string) {
	t.Helper()
	if err := st.ClaimOnHost(context.Background(), host, id, store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 1}, nil); err != nil {
		t.Fatalf("claim %s on %s: %v", id, host, err)
	}
}

// addAction records the API action an agent's report belongs to.
func addAction(t *testing.T, st *store.Store, id, action, requestID string) {
	t.Helper()
	if err := st.StartAction(context.Background(), id, action, requestID, "u1", "p1"); err != nil {
		t.Fatalf("start action: %v", err)
	}
}

func loadInst(t *testing.T, st *store.Store, id string) store.Instance {
	t.Helper()
	var inst store.Instance
	if err := st.DB.Where("id = ?", id).First(&inst).Error; err != nil {
		t.Fatalf("load instance %s: %v", id, err)
	}
	return inst
}

// claimHosts lists the hosts id holds claims on.
func claimHosts(t *testing.T, st *store.Store, id string) []string {
	t.Helper()
	var hosts []string
	if err := st.DB.Model(&store.Claim{}).Where("instance_id = ?", id).Order("host").Pluck("host", &hosts).Error; err != nil {
		t.Fatalf("claims of %s: %v", id, err)
	}
	return hosts
}

// eventsOf lists the events of the action requestID of instance id.
func eventsOf(t *testing.T, st *store.Store, id, requestID string) []store.InstanceActionEvent {
	t.Helper()
	var a store.InstanceAction
	if err := st.DB.Preload("Events").Where("instance_id = ? AND request_id = ?", id, requestID).First(&a).Error; err != nil {
		t.Fatalf("action %s of %s: %v", requestID, id, err)
	}
	return a.Events
}

// send hands the conductor one message, as its consumer would.
func send(t *testing.T, c *Conductor, kind string, body any) (any, error) {
	t.Helper()
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		t.Fatalf("new message: %v", err)
	}
	return c.Handle(context.Background(), m)
}

// mustSend is send for messages that must be handled without error.
func mustSend(t *testing.T, c *Conductor, kind string, body any) any {
	t.Helper()
	reply, err := send(t, c, kind, body)
	if err != nil {
		t.Fatalf("handle %s: %v", kind, err)
	}
	return reply
}

// report is an agent's report of action on inst from host.
func report(inst store.Instance, host string, action lifecycle.Action, requestID string, ok bool) protocol.InstanceReport {
	r := protocol.InstanceReport{RequestID: requestID, InstanceID: inst.ID, Host: host, Action: action,
		Attempt: max(inst.BuildAttempts, 1), OK: ok, Event: "compute_" + string(action),
		Started: testNow.Add(-10 * time.Second), Finished: testNow.Add(-time.Second)}
	if ok {
		_, ps := lifecycle.Outcome(action)
		r.PowerState = int(ps)
	} else {
		r.Error = "boom: " + string(action) + " failed"
	}
	return r
}

// scheduleRequests decodes what was published to the scheduler queue.
func scheduleRequests(t *testing.T, b *bus.Mem) []protocol.ScheduleInstance {
	t.Helper()
	var out []protocol.ScheduleInstance
	for _, m := range b.Sent(bus.SchedulerQueue) {
		if m.Kind != protocol.KindScheduleInstance {
			t.Errorf("unexpected %s on the scheduler queue", m.Kind)
			continue
		}
		var s protocol.ScheduleInstance
		if err := m.Decode(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return out
}

// sameInstance fails unless got still is want, apart from row timestamps
// the database may round.
func sameInstance(t *testing.T, got, want store.Instance) {
	t.Helper()
	norm := func(i store.Instance) store.Instance {
		i.CreatedAt, i.UpdatedAt = time.Time{}, time.Time{}
		i.DeletedAt, i.LaunchedAt, i.TerminatedAt, i.FaultAt = nil, nil, nil, nil
		return i
	}
	if norm(got) != norm(want) {
		t.Errorf("instance changed:\n got %+v\nwant %+v", norm(got), norm(want))
	}
	if (got.DeletedAt == nil) != (want.DeletedAt == nil) || !got.UpdatedAt.Equal(want.UpdatedAt) {
		t.Errorf("instance touched: deleted_at %v→%v, updated_at %v→%v", want.DeletedAt, got.DeletedAt, want.UpdatedAt, got.UpdatedAt)
	}
}

func openSQLite(t *testing.T) *store.Store { return storetest.SQLite(t) }

func forEachDB(t *testing.T, f func(t *testing.T, st *store.Store)) { storetest.ForEach(t, f) }
