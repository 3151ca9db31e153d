package conductor

import (
	"context"
	"testing"
	"time"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/config"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/migrate"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// sendAs hands the conductor one message published by broker user sender.
func sendAs(t *testing.T, c *Conductor, sender, kind string, body any) (any, error) {
	t.Helper()
	m, err := bus.NewMessage(kind, body)
	if err != nil {
		t.Fatal(err)
	}
	m.Sender = sender
	return c.Handle(context.Background(), m)
}

// A compute host's broker user reports only about itself and its own
// servers: host-b cannot stop, fault, power-sync or list host-a's servers,
// whatever host its message names.
func TestReportsOnlyFromTheOwningHost(t *testing.T) {
	st := openSQLite(t)
	c := New(st, bus.NewMem(), config.Conductor{AgentUserPrefix: "capsule-agent-"}, 3, quietLog())
	c.now = func() time.Time { return testNow }
	addHost(t, st, "host-a")
	addHost(t, st, "host-b")
	inst := addInstance(t, st, onHost("host-a"), state(lifecycle.Active, lifecycle.PoweringOff), power(lifecycle.Running))
	addAction(t, st, inst.ID, string(lifecycle.ActStop), "req-1")
	before := loadInst(t, st, inst.ID)

	refused := map[string]struct {
		sender, kind string
		body         any
	}{
		"host-b reports about host-a's server": {"capsule-agent-host-b", protocol.KindInstanceReport,
			report(inst, "host-b", lifecycle.ActStop, "req-1", true)},
		"host-b claims to be host-a": {"capsule-agent-host-b", protocol.KindInstanceReport,
			report(inst, "host-a", lifecycle.ActStop, "req-1", false)},
		"host-b power-syncs host-a": {"capsule-agent-host-b", protocol.KindPowerSync,
			protocol.PowerSync{Host: "host-a", States: map[string]int{inst.ID: int(lifecycle.Shutdown)}}},
		"host-b snapshots host-a's server": {"capsule-agent-host-b", protocol.KindSnapshotReport,
			protocol.SnapshotReport{InstanceID: inst.ID, Host: "host-b", RequestID: "req-1"}},
		"host-b raises an event on host-a's server": {"capsule-agent-host-b", protocol.KindHostEvent,
			protocol.HostEvent{Host: "host-b", InstanceID: inst.ID}},
		"host-b heartbeats for host-a": {"capsule-agent-host-b", protocol.KindHostReport, hostReport("host-a")},
		"host-b asks for host-a's servers": {"capsule-agent-host-b", protocol.KindInstancesOnHost,
			protocol.InstancesOnHostRequest{Host: "host-a"}},
		"a host advances a migration": {"capsule-agent-host-a", migrate.KindMigrationAdvance,
			migrate.Advance{MigrationID: 1}},
	}
	for name, m := range refused {
		t.Run(name, func(t *testing.T) {
			_, err := sendAs(t, c, m.sender, m.kind, m.body)
			if err == nil || bus.IsRetry(err) {
				t.Fatalf("handled (err %v), want refused for good", err)
			}
			sameInstance(t, loadInst(t, st, inst.ID), before)
			if evs := eventsOf(t, st, inst.ID, "req-1"); len(evs) != 0 {
				t.Errorf("refused report recorded events %+v", evs)
			}
		})
	}
	var svcs []store.Service
	if err := st.DB.Where("host = ?", "host-a").Find(&svcs).Error; err != nil || len(svcs) != 1 || svcs[0].VCPUs != 4 {
		t.Errorf("host-a's service changed by host-b's heartbeat: %+v %v", svcs, err)
	}

	// The owner's own report goes through, as does a control-plane user's.
	if _, err := sendAs(t, c, "capsule-agent-host-a", protocol.KindInstancesOnHost, protocol.InstancesOnHostRequest{Host: "host-a"}); err != nil {
		t.Fatalf("host-a's own instances: %v", err)
	}
	if _, err := sendAs(t, c, "capsule-agent-host-a", protocol.KindInstanceReport, report(inst, "host-a", lifecycle.ActStop, "req-1", true)); err != nil {
		t.Fatalf("host-a's own report: %v", err)
	}
	if got := loadInst(t, st, inst.ID); got.VMState != lifecycle.Stopped || got.TaskState != "" {
		t.Errorf("after host-a's report: %s/%q, want stopped/none", got.VMState, got.TaskState)
	}
	if _, err := sendAs(t, c, bus.MemSender, protocol.KindHostReport, hostReport("host-b")); err != nil {
		t.Errorf("control-plane user's report: %v", err)
	}
}
