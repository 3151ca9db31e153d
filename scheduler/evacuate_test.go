package scheduler

import (
	"context"
	"strings"
	"testing"

	"github.com/capsule-cloud/capsule/bus"
	"github.com/capsule-cloud/capsule/instance"
	"github.com/capsule-cloud/capsule/lifecycle"
	"github.com/capsule-cloud/capsule/protocol"
	"github.com/capsule-cloud/capsule/store"
)

// evacuating stores server id active on the dead host h1 (its claim
// there) with its evacuation begun, as the API leaves it.
func evacuating(t *testing.T, st *store.Store, id, zone string) {
	t.Helper()
	inst := newInstance(t, st, id, func(i *store.Instance) {
		i.VMState, i.TaskState, i.Host, i.RequestedZone = lifecycle.Active, lifecycle.NoTask, "h1", zone
	})
	if err := st.ClaimOnHost(context.Background(), "h1", id, store.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 5}, nil); err != nil {
		t.Fatal(err)
	}
	m := store.Migration{RequestID: "req-" + id}
	if err := instance.BeginEvacuate(st.DB, inst, &m, false, testNow, nil); err != nil {
		t.Fatal(err)
	}
}

func evacuateMsg(t *testing.T, id, host string) bus.Message {
	t.Helper()
	m, err := bus.NewMessage(protocol.KindScheduleInstance, protocol.ScheduleInstance{
		InstanceID: id, RequestID: "req-" + id, Attempt: 1, Host: host, Evacuate: true})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestScheduleEvacuation: an evacuation is placed on a live host of the
// server's pinned zone, never its dead host, with the dead host's claim
// dropped, and that host gets the build of its image marked as an
// evacuation; a redelivery re-sends it without a second claim. With no
// host for it the server stays as it was on its dead host with a fault
// saying why, its migration in error.
func TestScheduleEvacuation(t *testing.T) {
	st := openSQLite(t)
	mem := bus.NewMem()
	t.Cleanup(func() { mem.Close() })
	addHost(t, st, "h1", forcedDown())
	addHost(t, st, "h2")
	addHost(t, st, "h3", zone("other"))
	s := newTestScheduler(st, mem, "")
	ctx := context.Background()

	evacuating(t, st, "e1", "nova")
	for range 2 {
		if _, err := s.Handle(ctx, evacuateMsg(t, "e1", "")); err != nil {
			t.Fatal(err)
		}
	}
	var inst store.Instance
	st.DB.Where("id = ?", "e1").First(&inst)
	if inst.Host != "h2" || inst.TaskState != lifecycle.RebuildSpawning || inst.VMState != lifecycle.Active {
		t.Errorf("after placement: %s/%s on %s, want active/rebuild_spawning on h2", inst.VMState, inst.TaskState, inst.Host)
	}
	var claims []store.Claim
	st.DB.Where("instance_id = ?", "e1").Find(&claims)
	if len(claims) != 1 || claims[0].Host != "h2" {
		t.Errorf("claims %+v, want one on h2", claims)
	}
	sent := mem.Sent(bus.ComputeQueue("h2"))
	if len(sent) != 2 {
		t.Fatalf("builds sent to h2: %d, want 2 (a redelivery re-sends)", len(sent))
	}
	var b protocol.BuildInstance
	if err := sent[0].Decode(&b); err != nil {
		t.Fatal(err)
	}
	if !b.Evacuate || b.Stopped || b.Spec.ImageRef != testImageRef || b.Spec.ID != "e1" {
		t.Errorf("build %+v", b)
	}

	// Only the dead host asked for: no valid host.
	evacuating(t, st, "e2", "")
	if _, err := s.Handle(ctx, evacuateMsg(t, "e2", "h1")); err != nil {
		t.Fatal(err)
	}
	inst = store.Instance{}
	st.DB.Where("id = ?", "e2").First(&inst)
	if inst.Host != "h1" || inst.TaskState != lifecycle.NoTask || inst.VMState != lifecycle.Active ||
		!strings.Contains(inst.FaultMessage, "Evacuation failed: "+NoValidHostMessage) {
		t.Errorf("no host: %s/%s on %s fault %q", inst.VMState, inst.TaskState, inst.Host, inst.FaultMessage)
	}
	var m store.Migration
	st.DB.Where("instance_id = ?", "e2").Take(&m)
	if m.Status != instance.EvacError {
		t.Errorf("migration %s, want error", m.Status)
	}
	var ev store.InstanceActionEvent
	if err := st.DB.Where("event = ?", EventEvacuate).Last(&ev).Error; err != nil {
		t.Errorf("no %s event: %v", EventEvacuate, err)
	}
}
